// Row-range reconstruction of lossy chunks (docs/lossy_format.md): a chunk is parsed once, its codes left
// packed, and any range of rows is then rebuilt from the base's same rows alone, so a download holds a
// few rows of float32 at a time instead of the tensor. Each row's bytes are those DecodeLossyChunk gives.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/dtype.h"
#include "codec/lossy_codec.h"
#include "common/status.h"

namespace deltastore {

class LossyRowDecoder {
 public:
  static StatusOr<std::unique_ptr<LossyRowDecoder>> Parse(std::string_view encoded);

  DType dtype() const { return dtype_; }
  const LossyParams& params() const { return t_.p; }
  uint64_t row_bytes() const { return static_cast<uint64_t>(t_.p.cols) * DTypeSize(dtype_); }
  uint64_t raw_size() const { return row_bytes() * t_.p.rows; }
  // Reconstructs rows [r0, r1) into out[0 .. (r1 - r0) * row_bytes()) from `base`, the base tensor's
  // bytes of the same rows.
  Status DecodeRows(uint32_t r0, uint32_t r1, std::string_view base, char* out) const;

 private:
  LossyRowDecoder() = default;
  // What DecodeRow writes between rows, sized once per call of DecodeRows.
  struct Scratch {
    std::vector<float> w, c, a, sum;  // the row in float32, its delta, its row of A, its row of A B
    std::vector<uint32_t> kept;
    std::vector<uint16_t> codes;
  };
  void DecodeRow(uint32_t r, const char* base, char* out, Scratch* s) const;

  DType dtype_ = DType::kF32;
  LossyTensor t_;  // without codes (packed_) or dequantized factors
  PackedCodes packed_;
  std::vector<uint64_t> row_start_;
  std::vector<float> b_;  // rank > 0: B dequantized, rank x cols (A's rows are dequantized per row)
};

// The parsed chunks of the last few lossy tensors read, shared by the readers of one download (a
// tensor's pieces are decoded on several workers): each chunk is fetched and parsed once while its
// pieces are read. Thread-safe.
class LossyDecoderCache {
 public:
  explicit LossyDecoderCache(size_t capacity = 2) : capacity_(capacity) {}
  // The decoder of the chunk named `key`, parsed from fetch() on a miss.
  StatusOr<std::shared_ptr<const LossyRowDecoder>> Get(const std::string& key,
                                                       const std::function<StatusOr<std::string>()>& fetch);

 private:
  size_t capacity_;
  std::mutex mu_;
  std::deque<std::pair<std::string, std::shared_ptr<const LossyRowDecoder>>> entries_;  // newest last
};

}  // namespace deltastore
