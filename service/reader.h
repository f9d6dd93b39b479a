// Reconstruction (manifest + chunks -> file bytes): reading a stored version's tensors and files, and
// base tensors from safetensors files on disk. Memory stays bounded by a few chunks: files are produced
// piece by piece.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/lossy_rows.h"
#include "codec/manifest.h"
#include "codec/safetensors.h"
#include "service/file_streamer.h"
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
  // Whether chunks are read with their sha256 checked (the default). A reader whose output is checked end
  // to end (FileStreamer with a whole-file sha256) turns it off; the base reader follows.
  void CheckChunkDigests(bool on);
  // Streams bytes [begin, end) of a file through `sink` (see FileStreamer).
  Status StreamFile(const FileEntry& file, uint64_t begin, uint64_t end, const ByteSink& sink,
                    bool verify = true);

 private:
  StatusOr<TensorSource*> Base();
  StatusOr<std::string> Fetch(const Digest& digest);
  // The stored bytes of chunk `index`; for a delta chunk `base_bytes` views its base bytes (in
  // base_scratch_, valid until the next call).
  StatusOr<std::string> FetchChunk(const TensorEntry& tensor, size_t index, uint64_t chunk_offset,
                                   std::string_view* base_bytes);
  StatusOr<const std::string*> DecodedChunk(const TensorEntry& tensor, size_t index, uint64_t chunk_offset);
  // Bytes of a lossy tensor (one chunk): only the rows that hold them are rebuilt, from the base's rows.
  Status ReadLossy(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out);

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
  std::string base_scratch_;
  bool check_digests_ = true;
  // Parsed lossy chunks, shared with this reader's clones (a download's workers).
  std::shared_ptr<LossyDecoderCache> lossy_cache_ = std::make_shared<LossyDecoderCache>();
  // The rows of a lossy tensor last rebuilt (a piece may end mid-row; the next one starts there).
  std::string lossy_tensor_;
  uint64_t lossy_r0_ = 0, lossy_r1_ = 0;
  std::string lossy_rows_;
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
