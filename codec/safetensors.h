// safetensors: strict header parsing, a positional file reader and a streaming writer.
//
// File layout: u64 little-endian N, N bytes of UTF-8 JSON, then the data section. The JSON maps tensor
// names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data section) and may hold
// "__metadata__" (string -> string). We keep the first 8 + N bytes verbatim so a rebuilt file is
// byte-identical to the upload.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "codec/dtype.h"
#include "common/status.h"

namespace deltastore {

inline constexpr uint64_t kMaxSafetensorsHeaderSize = 100ull << 20;  // 100 MiB
inline constexpr uint64_t kMaxTensorDims = 64;
// Tensors in one file (docs/hardening.md): real shards hold up to tens of thousands; more is refused
// (400 TOO_MANY_TENSORS) before the header is turned into objects.
inline constexpr uint64_t kMaxSafetensorsTensors = 100000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;

  uint64_t size() const { return end - begin; }
  uint64_t numel() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
};

struct SafetensorsHeader {
  std::string header_bytes;  // the 8-byte length prefix and the JSON, verbatim
  uint64_t data_size = 0;
  std::vector<TensorInfo> tensors;  // in data order (ascending offsets), which covers the data section
  std::map<std::string, std::string> metadata;
  std::vector<uint32_t> by_name;  // indexes of `tensors` sorted by name (Find)

  uint64_t data_start() const { return header_bytes.size(); }
  uint64_t file_size() const { return data_start() + data_size; }
  const TensorInfo* Find(std::string_view name) const;  // O(log n)
};

// True for a file name ending in ".safetensors" (the files a version stores tensor by tensor).
bool IsSafetensorsPath(std::string_view path);

// Reads the JSON length from the first 8 bytes and checks it against the limit and the file size.
StatusOr<uint64_t> ParseSafetensorsHeaderLength(std::string_view first8, uint64_t file_size);

// Validates `header_bytes` (8 + N bytes) of a file of `file_size` bytes: UTF-8 JSON object, known dtypes,
// shapes, offsets inside the data section, contiguous, non-overlapping, sizes equal to numel * element size.
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string header_bytes, uint64_t file_size);

// A safetensors file on disk: header parsed at open, tensor bytes read on demand with pread. Error
// messages never name the path (a server's spool path is not the client's business): callers annotate
// them with the name their user knows.
class SafetensorsFile {
 public:
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  // Reads `len` bytes at `offset` within the tensor's bytes.
  Status ReadTensorRange(const TensorInfo& tensor, uint64_t offset, uint64_t len, char* out) const;
  // Reads `len` bytes at absolute file offset `offset`.
  Status ReadAt(uint64_t offset, uint64_t len, char* out) const;

 private:
  SafetensorsFile(std::string path, int fd, SafetensorsHeader header)
      : path_(std::move(path)), fd_(fd), header_(std::move(header)) {}
  std::string path_;
  int fd_;
  SafetensorsHeader header_;
};

// Builds a header for tensors laid out in the given order (offsets computed contiguously), JSON keys
// sorted, padded with spaces to a multiple of 8 as the reference writer does.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
};
StatusOr<SafetensorsHeader> BuildSafetensorsHeader(const std::vector<TensorSpec>& tensors,
                                                   const std::map<std::string, std::string>& metadata);

// Where streamed output goes (a file, a socket, a hash): called with consecutive pieces.
using ByteSink = std::function<Status(std::string_view)>;

// Writes a whole file from in-memory tensors, in the given order (tests, benchmarks, generators).
Status WriteSafetensorsFile(const std::string& path, const std::vector<TensorSpec>& tensors,
                            const std::vector<std::string>& data,
                            const std::map<std::string, std::string>& metadata = {});

}  // namespace deltastore
