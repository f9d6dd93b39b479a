// Version manifests: what a version holds and how each piece is encoded (docs/manifest_format.md).
// A manifest is JSON; its sha256 (of the canonical dump) is the version's digest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "codec/dtype.h"
#include "common/sha256.h"
#include "common/status.h"

namespace deltastore {

inline constexpr int kManifestFormatVersion = 1;

struct ChunkRef {
  Digest digest;
  uint64_t raw_size = 0;     // bytes this chunk decodes to
  uint64_t stored_size = 0;  // encoded bytes in the chunk store
};

enum class TensorEncoding { kStandalone, kSameAsBase, kDelta, kLossy };
std::string_view TensorEncodingName(TensorEncoding e);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;  // in the file's data section
  uint64_t size = 0;
  Digest sha256;  // of the raw tensor bytes
  TensorEncoding encoding = TensorEncoding::kStandalone;
  std::vector<ChunkRef> chunks;  // empty for kSameAsBase
};

enum class FileKind { kSafetensors, kBlob };

struct FileEntry {
  std::string path;
  FileKind kind = FileKind::kBlob;
  uint64_t size = 0;
  Digest sha256;                        // of the whole file as it is served (rebuilt)
  std::optional<Digest> source_sha256;  // lossy versions: of the file as uploaded, when it differs
  std::optional<ChunkRef> header;       // safetensors: the verbatim header bytes
  std::vector<TensorEntry> tensors;     // safetensors: in data order
  std::vector<ChunkRef> chunks;         // blob: the file's bytes
};

struct Manifest {
  std::string mode = "lossless";  // "lossless" (base or lossless delta), "lossy"
  std::optional<Digest> base;     // base version digest, for finetunes
  std::vector<FileEntry> files;

  uint64_t LogicalBytes() const;
  uint64_t EncodedBytes() const;  // sum of stored sizes of every chunk reference
  // Every chunk reference, once per occurrence (matches the store's reference counts).
  std::vector<Digest> ChunkDigests() const;
  const FileEntry* FindFile(std::string_view path) const;
};

std::string SerializeManifest(const Manifest& m);  // canonical JSON
StatusOr<Manifest> ParseManifest(std::string_view json_text);
Digest ManifestDigest(const Manifest& m);  // sha256 of SerializeManifest

}  // namespace deltastore
