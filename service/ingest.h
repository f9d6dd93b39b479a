// Ingest (files -> chunks + manifest): tensors are read, encoded (standalone, as a delta against the
// base version, or lossy through a hook) and put into the chunk store one piece at a time.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/file_cache.h"
#include "service/reader.h"

namespace deltastore {

struct IngestProgress {
  // "planning" while the lossy rate allocation probes the tensors (tensors_done counts them), then
  // "encoding".
  std::string phase = "encoding";
  uint64_t tensors_done = 0;
  uint64_t tensors_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};
using ProgressFn = std::function<void(const IngestProgress&)>;

struct IngestStats {
  uint64_t logical_bytes = 0;  // bytes of the input files
  uint64_t encoded_bytes = 0;  // encoded bytes the version references (before dedup)
  uint64_t new_bytes = 0;      // bytes newly written to the chunk store (after dedup)
  uint64_t chunks = 0;
  uint64_t new_chunks = 0;
  uint64_t tensors = 0;
  uint64_t tensors_same = 0;
  uint64_t tensors_delta = 0;
  uint64_t tensors_standalone = 0;
  uint64_t tensors_lossy = 0;
  std::vector<std::string> lossy_reports;  // JSON, one per lossy tensor
};

struct IngestFile {
  std::string source_path;  // where the bytes are (a sealed upload, or a local file)
  std::string path;         // the file's name inside the version
};

// A lossy encoding of one tensor, produced by the lossy hook.
struct LossyOutcome {
  std::string chunk;        // the encoded lossy chunk
  std::string report_json;  // per-tensor quality report
};
// What a lossy hook calls between steps of a tensor's work (LossyOptions::progress) with the fraction of
// the tensor done: the ingest's progress moves within the tensor. It returns false once the ingest is
// cancelled; the hook then stops and fails (the ingest reports its cancellation).
using LossyStep = std::function<bool(double fraction)>;
// What a lossy hook hands the tensor it rebuilt to (the bytes downloads will produce), a block of rows at
// a time in row order, all of it before returning an outcome and none of it when declining the tensor:
// the ingest hashes the rows as they come (the tensor's sha256 and the served file's), never holding the
// tensor rebuilt whole.
using LossyRebuilt = std::function<void(std::string_view rows)>;

// Decides and performs lossy compression of a tensor whose base tensor has the same layout; returns
// nullopt to store the tensor losslessly. `stream` numbers the tensors of a version that differ from a
// base tensor of the same layout, counting those the LossyFilter leaves out. The ingest may run the hook
// for several tensors of a file at once, each on another thread (with its `step` and `rebuilt`),
// starting them in file order: a tensor's bytes may depend on the hook's work for the offered tensors
// that end IngestOptions::lossy_reach bytes or more before it begins, never on the others.
using LossyHook = std::function<StatusOr<std::optional<LossyOutcome>>(
    const TensorInfo& tensor, const std::string& base_bytes, const std::string& finetune_bytes,
    uint32_t stream, const LossyStep& step, const LossyRebuilt& rebuilt)>;

// Which tensors the lossy hook may store lossily. The ingest reads only those whole; the others go the
// lossless way a chunk at a time (the hook is not called for them).
using LossyFilter = std::function<bool(const TensorInfo& tensor)>;

// Streams a tensor's base and finetune bytes to `visit`, a piece of each at a time (at most a chunk, the
// same range of both, `offset` bytes into the tensor) in order, for the planner's probe (see LossyPlanner).
using TensorPairVisitor =
    std::function<void(uint64_t offset, std::string_view base, std::string_view finetune)>;
using TensorPairReader = std::function<Status(const TensorPairVisitor& visit)>;

// Optional first pass of a lossy version (model-level rate allocation): `probe` sees every tensor the
// hook will be offered (a base tensor of the same layout, other bytes), with the same arguments, before
// any is encoded; then `plan` runs once and gives the lossy reach of the encoding pass (see
// IngestOptions::lossy_reach). The probe reads the bytes through `read` (valid until `probe`
// returns) and keeps what it needs of them once the probes already running leave room for it, so the
// planner bounds the bytes held at once. A probe may run on another thread after `probe` returns: its `step`
// (a copy may be called from any thread until `plan` returns) reports the probe's progress and checks for
// cancellation.
struct LossyPlanner {
  std::function<Status(const TensorInfo& tensor, const TensorPairReader& read, uint32_t stream,
                       const LossyStep& step)>
      probe;
  std::function<StatusOr<uint64_t>()> plan;
};

struct IngestOptions {
  EncodeOptions encode;
  LossyHook lossy;             // set for lossy versions
  LossyFilter lossy_takes;     // with `lossy` (null: it is offered every tensor)
  LossyPlanner lossy_planner;  // optional, with `lossy`
  // Checked between tensors and, through LossyStep, within a lossy tensor's work: true stops the ingest
  // (kUnavailable).
  std::function<bool()> cancelled;
  // When set and the version is lossless (no `lossy`), the cache adopts each source file once it is read
  // (FileCache::Adopt, a hard link under the sha256 computed over it): its bytes are the bytes downloads
  // will serve. The sources must never be written again (the registry passes sealed uploads).
  FileCache* file_cache = nullptr;
  // Threads that encode a file's tensor chunks (0: the machine's cores). At most this many chunks are in
  // flight (each with its base piece); they are stored in order, so the manifest, the chunks and their
  // reference counts are those of a one-thread run.
  size_t encode_threads = 0;
  // How far back the lossy hook's bytes for a tensor may depend on its work for other tensors: on the
  // offered tensors of the file ending at least this many bytes before it begins (their bytes counted in
  // file order), never on the others, so the ingest may run those at once on up to encode_threads threads
  // with the same bytes (see LossyAhead). 0: on every tensor before it (one tensor at a time). The
  // planner's plan gives it where there is one.
  uint64_t lossy_reach = 0;
};

// Stores the files and returns the manifest (the caller records it). `base` may be null (a base
// version: tensors are stored standalone); `base_digest` is recorded in the manifest. On failure every chunk
// reference taken is dropped again.
StatusOr<Manifest> IngestFiles(ChunkStore* store, const std::vector<IngestFile>& files, VersionReader* base,
                               const IngestOptions& options, IngestStats* stats,
                               const ProgressFn& progress = {});

// Drops the references a manifest holds (deleting a version).
Status ReleaseManifest(ChunkStore* store, const Manifest& manifest);

}  // namespace deltastore
