// Per-tensor downloads: a safetensors file holding only some tensors of a stored safetensors file,
// rebuilt from the chunks of those tensors alone (its header chunk, each asked tensor's chunks and, for
// delta tensors, the base chunks they decode against), never from a full rebuild of the file.
//
// The file is written once to an anonymous temporary file while its sha256 is computed (the ETag must
// be known before the first byte goes out), then read back in pieces: memory stays at one chunk.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "codec/manifest.h"
#include "common/sha256.h"
#include "common/status.h"
#include "service/reader.h"
#include "storage/chunk_store.h"

namespace deltastore {

inline constexpr size_t kMaxSubsetTensors = 100000;

// What building a subset read from the chunk store.
struct ChunkReadStats {
  uint64_t chunks = 0;        // chunk store reads (each decoded chunk is read once)
  uint64_t stored_bytes = 0;  // encoded bytes those reads returned
};

// Splits "a,b,c" into names (empty items dropped, duplicates kept once, order kept); kInvalidArgument
// (TensorsInvalid) when nothing is left or there are more than kMaxSubsetTensors.
StatusOr<std::vector<std::string>> ParseTensorList(std::string_view list);

class TensorSubset {
 public:
  // `names` must all be tensors of `file` (a safetensors file of `manifest`), else kInvalidArgument
  // (TensorUnknown) whose message lists the unknown names. The tensors keep the file's data order and
  // its "__metadata__"; `loader` opens base versions for delta tensors.
  static StatusOr<std::unique_ptr<TensorSubset>> Build(ChunkStore* store, const Manifest& manifest,
                                                       ManifestLoader loader, const FileEntry& file,
                                                       const std::vector<std::string>& names);
  ~TensorSubset();
  TensorSubset(const TensorSubset&) = delete;
  TensorSubset& operator=(const TensorSubset&) = delete;

  uint64_t size() const { return size_; }
  const Digest& sha256() const { return sha256_; }
  const ChunkReadStats& reads() const { return reads_; }
  size_t tensors() const { return tensors_; }
  // Up to `len` bytes at `offset` of the built file (fewer only at its end).
  StatusOr<std::string> Read(uint64_t offset, uint64_t len) const;

 private:
  TensorSubset() = default;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
  Digest sha256_;
  ChunkReadStats reads_;
  size_t tensors_ = 0;
};

}  // namespace deltastore
