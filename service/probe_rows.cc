#include "service/probe_rows.h"

#include <algorithm>
#include <cstring>

namespace deltastore {
namespace {

// Whether no element of n `T`s has every exponent bit set (Inf or NaN).
template <typename T>
bool NoneAllOnes(const char* data, size_t n, T exponent) {
  bool ok = true;
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, data + i * sizeof(T), sizeof(T));
    ok &= (v & exponent) != exponent;
  }
  return ok;
}

}  // namespace

bool AllFinite(DType dtype, std::string_view bytes) {
  switch (dtype) {
    case DType::kF32: return NoneAllOnes<uint32_t>(bytes.data(), bytes.size() / 4, 0x7f800000u);
    case DType::kF16: return NoneAllOnes<uint16_t>(bytes.data(), bytes.size() / 2, 0x7c00);
    case DType::kBF16: return NoneAllOnes<uint16_t>(bytes.data(), bytes.size() / 2, 0x7f80);
    default: return true;
  }
}

std::string PairFingerprint(std::string_view base, std::string_view finetune) {
  Xxh128 b, f;
  b.Update(base);
  f.Update(finetune);
  return b.Finish() + f.Finish();
}

ProbeRows::ProbeRows(DType dtype, uint64_t row_bytes, uint32_t stride)
    : dtype_(dtype), row_bytes_(row_bytes), stride_(std::max<uint32_t>(stride, 1)) {}

void ProbeRows::Add(uint64_t offset, std::string_view base, std::string_view finetune) {
  base_hash_.Update(base);
  finetune_hash_.Update(finetune);
  finite_ = finite_ && AllFinite(dtype_, base) && AllFinite(dtype_, finetune);
  if (row_bytes_ == 0) return;
  // The kept rows' bytes inside [offset, offset + size): rows k * stride, from the row the piece starts in.
  const uint64_t end = offset + base.size(), period = row_bytes_ * stride_;
  for (uint64_t row = offset / period * period; row < end; row += period) {
    const uint64_t from = std::max(row, offset), to = std::min(row + row_bytes_, end);
    if (from >= to) continue;
    base_.append(base.substr(from - offset, to - from));
    finetune_.append(finetune.substr(from - offset, to - from));
  }
}

std::string ProbeRows::Fingerprint() const {
  return base_hash_.Finish() + finetune_hash_.Finish();
}

}  // namespace deltastore
