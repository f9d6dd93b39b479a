#include "codec/low_rank_row.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deltastore {
namespace {

#if defined(__x86_64__)
// N eight-wide lanes of the row: N independent sums kept in registers across the rank's terms.
template <int N>
__attribute__((target("avx"))) inline void Lanes(const float* a, const float* b, uint32_t rank, uint32_t cols,
                                                 float* out) {
  __m256 s[N];
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) s[i] = _mm256_setzero_ps();
  for (uint32_t k = 0; k < rank; ++k) {
    const __m256 x = _mm256_set1_ps(a[k]);
    const float* y = b + static_cast<uint64_t>(k) * cols;
#pragma GCC unroll 8
    for (int i = 0; i < N; ++i) s[i] = _mm256_add_ps(s[i], _mm256_mul_ps(x, _mm256_loadu_ps(y + 8 * i)));
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) _mm256_storeu_ps(out + 8 * i, s[i]);
}

__attribute__((target("avx"))) void RowAvx(const float* a, const float* b, uint32_t rank, uint32_t cols,
                                           float* out) {
  uint32_t j = 0;
  for (; j + 64 <= cols; j += 64) Lanes<8>(a, b + j, rank, cols, out + j);
  for (; j + 8 <= cols; j += 8) Lanes<1>(a, b + j, rank, cols, out + j);
  for (; j < cols; ++j) {
    float s = 0;
    for (uint32_t k = 0; k < rank; ++k) s = s + a[k] * b[static_cast<uint64_t>(k) * cols + j];
    out[j] = s;
  }
}
#endif

// Built with -ffp-contract=off (codec/CMakeLists.txt): `s + x * y` is a rounded product, then a rounded sum.
void RowScalar(const float* a, const float* b, uint32_t rank, uint32_t cols, float* out) {
  for (uint32_t j = 0; j < cols; ++j) out[j] = 0;
  for (uint32_t k = 0; k < rank; ++k) {
    const float x = a[k];
    const float* y = b + static_cast<uint64_t>(k) * cols;
    for (uint32_t j = 0; j < cols; ++j) out[j] = out[j] + x * y[j];
  }
}

}  // namespace

void LowRankRow(const float* a, const float* b, uint32_t rank, uint32_t cols, float* out) {
#if defined(__x86_64__)
  static const auto row = __builtin_cpu_supports("avx") ? RowAvx : RowScalar;
#else
  constexpr auto row = RowScalar;
#endif
  row(a, b, rank, cols, out);
}

}  // namespace deltastore
