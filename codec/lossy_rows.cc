#include "codec/lossy_rows.h"

#include <algorithm>

#include "codec/scaled_rows.h"

namespace deltastore {

StatusOr<std::unique_ptr<LossyRowDecoder>> LossyRowDecoder::Parse(std::string_view encoded) {
  std::unique_ptr<LossyRowDecoder> d(new LossyRowDecoder());
  DS_ASSIGN_OR_RETURN(d->t_, ParseLossyChunkPacked(encoded, &d->dtype_, &d->packed_, &d->row_start_));
  const LossyParams& p = d->t_.p;
  if (p.rank > 0) {
    d->b_.resize(static_cast<size_t>(p.rank) * p.cols);
    // As LowRankFactors: each element the float32 product of its scale and code.
    for (size_t i = 0; i < d->b_.size(); ++i) d->b_[i] = d->t_.factor_scale_b[i / p.cols] * d->t_.b_codes[i];
    d->t_.b_codes.clear();
    d->t_.b_codes.shrink_to_fit();
  }
  return d;
}

// Built with -ffp-contract=off (codec/CMakeLists.txt), and with the same operations in the same order as
// DecodeLossyChunk: C is S at the kept elements and 0 elsewhere, then C += (A B)[row] summed over k in
// order (SumScaledRows), then W = (1 + lambda) * base + mu * C with each product rounded on its own.
void LossyRowDecoder::DecodeRow(uint32_t r, const char* base, char* out, Scratch* s) const {
  const LossyParams& p = t_.p;
  const uint32_t cols = p.cols;
  std::vector<float>& w = s->w;
  std::vector<float>& c = s->c;
  ToFloat32(dtype_, base, cols, w.data());
  std::fill(c.begin(), c.end(), 0.0f);
  const uint64_t first = row_start_[r], n = row_start_[r + 1] - first;
  s->codes.resize(n);
  packed_.Unpack(first, n, s->codes.data());
  if (p.mask == MaskKind::kPositions) {
    const uint64_t row_begin = static_cast<uint64_t>(r) * cols;
    for (uint64_t i = 0; i < n; ++i)
      c[t_.positions[first + i] - row_begin] = DequantizeCode(t_, r, s->codes[i]);
  } else {
    KeptColumns(p, r, &s->kept);
    for (uint64_t i = 0; i < n; ++i) c[s->kept[i]] = DequantizeCode(t_, r, s->codes[i]);
  }
  if (p.rank > 0) {
    for (uint32_t k = 0; k < p.rank; ++k)
      s->a[k] = t_.factor_scale_a[k] * t_.a_codes[static_cast<size_t>(r) * p.rank + k];
    SumScaledRows(s->a.data(), nullptr, p.rank, b_.data(), cols, s->sum.data());
    for (uint32_t j = 0; j < cols; ++j) c[j] += s->sum[j];
  }
  const float shift = 1.0f + p.lambda, mu = p.mu;
  for (uint32_t j = 0; j < cols; ++j) {
    volatile float a = shift * w[j];  // volatile: no fused multiply-add, same bits on every build
    volatile float b = mu * c[j];
    w[j] = a + b;
  }
  FromFloat32(dtype_, w.data(), cols, out);
}

Status LossyRowDecoder::DecodeRows(uint32_t r0, uint32_t r1, std::string_view base, char* out) const {
  if (r0 > r1 || r1 > t_.p.rows) return InvalidArgument("lossy row range outside the tensor");
  const uint64_t row = row_bytes();
  if (base.size() != (r1 - r0) * row) return InvalidArgument("lossy rows need base bytes of their size");
  if (dtype_ != DType::kF32 && dtype_ != DType::kF16 && dtype_ != DType::kBF16)
    return Corruption("lossy chunk on a non-float dtype");
  Scratch s;
  s.w.resize(t_.p.cols);
  s.c.resize(t_.p.cols);
  s.a.resize(t_.p.rank);
  s.sum.resize(t_.p.rank > 0 ? t_.p.cols : 0);
  for (uint32_t r = r0; r < r1; ++r) {
    const uint64_t at = (r - r0) * row;
    DecodeRow(r, base.data() + at, out + at, &s);
  }
  return OkStatus();
}

StatusOr<std::shared_ptr<const LossyRowDecoder>> LossyDecoderCache::Get(
    const std::string& key, const std::function<StatusOr<std::string>()>& fetch) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [k, d] : entries_) {
    if (k == key) return d;
  }
  // Parsed under the lock: the other workers want this chunk too (or one the window holds back).
  DS_ASSIGN_OR_RETURN(std::string encoded, fetch());
  DS_ASSIGN_OR_RETURN(std::unique_ptr<LossyRowDecoder> parsed, LossyRowDecoder::Parse(encoded));
  std::shared_ptr<const LossyRowDecoder> d(std::move(parsed));
  entries_.emplace_back(key, d);
  while (entries_.size() > capacity_) entries_.pop_front();
  return d;
}

}  // namespace deltastore
