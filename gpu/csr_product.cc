#include "gpu/csr_product.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deltastore {
namespace {

#if defined(__x86_64__)
// One output row, `samples` wide: 32 columns at a time in eight-wide registers, then 8, then one by one.
// Multiplies and adds are separate instructions (the target has no FMA), so each lane computes exactly
// what the scalar loop below does.
__attribute__((target("avx"))) void RowAvx(const int64_t* col, const float* val, int64_t nnz, const float* X,
                                           int64_t samples, float* out) {
  int64_t j = 0;
  for (; j + 32 <= samples; j += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < nnz; ++k) {
      const __m256 v = _mm256_set1_ps(val[k]);
      const float* x = X + col[k] * samples + j;
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(v, _mm256_loadu_ps(x)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(v, _mm256_loadu_ps(x + 8)));
      a2 = _mm256_add_ps(a2, _mm256_mul_ps(v, _mm256_loadu_ps(x + 16)));
      a3 = _mm256_add_ps(a3, _mm256_mul_ps(v, _mm256_loadu_ps(x + 24)));
    }
    _mm256_storeu_ps(out + j, a0);
    _mm256_storeu_ps(out + j + 8, a1);
    _mm256_storeu_ps(out + j + 16, a2);
    _mm256_storeu_ps(out + j + 24, a3);
  }
  for (; j + 8 <= samples; j += 8) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = 0; k < nnz; ++k) {
      a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(val[k]), _mm256_loadu_ps(X + col[k] * samples + j)));
    }
    _mm256_storeu_ps(out + j, a);
  }
  for (; j < samples; ++j) {
    float a = 0;
    for (int64_t k = 0; k < nnz; ++k) a = a + val[k] * X[col[k] * samples + j];
    out[j] = a;
  }
}
#endif

void RowScalar(const int64_t* col, const float* val, int64_t nnz, const float* X, int64_t samples,
               float* out) {
  for (int64_t j = 0; j < samples; ++j) out[j] = 0;
  for (int64_t k = 0; k < nnz; ++k) {
    const float v = val[k];
    const float* x = X + col[k] * samples;
    for (int64_t j = 0; j < samples; ++j) out[j] = out[j] + v * x[j];
  }
}

}  // namespace

void CsrTimesDense(const int64_t* crow, const int64_t* col, const float* val, int64_t rows, const float* X,
                   int64_t samples, float* out) {
#if defined(__x86_64__)
  static const auto row = __builtin_cpu_supports("avx") ? RowAvx : RowScalar;
#else
  constexpr auto row = RowScalar;
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = crow[r];
    row(col + b, val + b, crow[r + 1] - b, X, samples, out + r * samples);
  }
}

}  // namespace deltastore
