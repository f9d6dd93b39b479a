// Reconstruction (manifest + chunks -> file bytes): reading a stored version's tensors and files, and
// base tensors from safetensors files on disk. Memory stays bounded by a few chunks: files are produced
// piece by piece.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/manifest.h"
#include "codec/safetensors.h"
#include "storage/chunk_store.h"

namespace deltastore {

// Resolves a version digest to its manifest (so readers can follow a chain of bases).
using ManifestLoader = std::function<StatusOr<Manifest>(const Digest&)>;

// Where base tensors come from: a stored version, or safetensors files on disk (offline rebuild).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // Finds a tensor by name across all files (shards).
  virtual const TensorEntry* FindTensor(std::string_view name) const = 0;
  // Reads bytes [offset, offset + len) of a tensor.
  virtual Status ReadTensor(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) = 0;
};

class VersionReader;

// Produces the bytes [begin, end) of a file of a version piece by piece (at most kChunkSize each, one
// stored chunk per piece). With `verify` and a whole-file range, the sha256 of what was produced is checked
// against the manifest before the last piece is handed out, so a wrong rebuild never completes.
// Pieces are decoded `workers` at a time (0: as many as the machine has cores, at most
// kMaxStreamWorkers), each worker with its own copy of the reader; the pieces come out in order and
// identical to a one-worker run. No decoding runs between calls of Next(), so memory stays at `workers`
// pieces (each at most kChunkSize, with its base piece and stored chunk while it decodes) and nothing
// outlives a call.
inline constexpr size_t kMaxStreamWorkers = 16;
class FileStreamer {
 public:
  FileStreamer(VersionReader* reader, const FileEntry* file, uint64_t begin, uint64_t end, bool verify,
               size_t workers = 0);
  // The next piece; empty at the end.
  StatusOr<std::string> Next();

 private:
  struct Segment {
    uint64_t begin, size;
    const TensorEntry* tensor;            // a tensor, or
    const std::vector<ChunkRef>* chunks;  // plain chunks (header, blob)
  };
  struct Piece {
    const Segment* segment;
    uint64_t in_segment, size;
  };
  // The next piece to decode (advancing pos_), or nullopt at the end.
  StatusOr<std::optional<Piece>> Plan();
  Status Read(VersionReader* reader, const Piece& piece, std::string* out);
  // Decodes the next batch of pieces into ready_.
  Status Fill();

  VersionReader* reader_;
  const FileEntry* file_;
  std::vector<Segment> segments_;
  size_t segment_ = 0;
  uint64_t pos_, end_;
  uint64_t delivered_;  // file offset after the last piece handed out
  bool verify_;
  size_t workers_;
  Sha256 hash_;
  std::vector<ChunkRef> header_;
  std::vector<std::unique_ptr<VersionReader>> clones_;  // readers for workers 1..workers_-1
  std::deque<std::string> ready_;
};

// Reads the contents of a stored version. Delta chunks are decoded against the base, which is the
// given source or else the base version opened on demand through the loader.
class VersionReader : public TensorSource {
 public:
  VersionReader(ChunkStore* store, Manifest manifest, ManifestLoader loader, TensorSource* base = nullptr);

  const Manifest& manifest() const { return manifest_; }
  const TensorEntry* FindTensor(std::string_view name) const override;
  Status ReadTensor(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) override;
  // Reads bytes of plain (standalone, non-tensor) chunks: headers and blobs.
  Status ReadChunks(const std::vector<ChunkRef>& chunks, uint64_t offset, uint64_t len, char* out);
  // A reader of the same version that shares nothing mutable with this one (its own chunk cache and its
  // own base reader; a base source given at construction is shared, and must allow concurrent reads).
  StatusOr<std::unique_ptr<VersionReader>> Clone();
  // Streams bytes [begin, end) of a file through `sink` (see FileStreamer).
  Status StreamFile(const FileEntry& file, uint64_t begin, uint64_t end, const ByteSink& sink,
                    bool verify = true);

 private:
  StatusOr<TensorSource*> Base();
  StatusOr<const std::string*> DecodedChunk(const TensorEntry& tensor, size_t index, uint64_t chunk_offset);

  ChunkStore* store_;
  Manifest manifest_;
  ManifestLoader loader_;
  TensorSource* base_ = nullptr;
  std::unique_ptr<VersionReader> owned_base_;
  std::map<std::string, const TensorEntry*, std::less<>> tensors_;
  // One decoded chunk, keyed by (tensor name, chunk index): sequential reads decode each chunk once.
  std::string cache_tensor_;
  size_t cache_index_ = 0;
  std::string cache_bytes_;
  bool cache_valid_ = false;
};

// Base tensors from safetensors files on disk (the original base checkpoint, for offline rebuilds).
class FilesTensorSource : public TensorSource {
 public:
  static StatusOr<std::unique_ptr<FilesTensorSource>> Open(const std::vector<std::string>& paths);
  const TensorEntry* FindTensor(std::string_view name) const override;
  Status ReadTensor(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) override;
  // sha256 of each file, in the order given.
  const std::vector<Digest>& file_digests() const { return digests_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<Digest> digests_;
  std::map<std::string, std::pair<TensorEntry, SafetensorsFile*>, std::less<>> tensors_;
};

// Writes a file of a version to a local path and checks its sha256.
Status RebuildFile(VersionReader* reader, const FileEntry& file, const std::string& out_path);

}  // namespace deltastore
