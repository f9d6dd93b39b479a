#include "gpu/row_quantize.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deltastore {
namespace {

#if defined(__x86_64__)
// Eight values at a time: the same operations lane by lane (the target has no FMA; min and max take their
// operands in the order that gives std::clamp's result for -0).
__attribute__((target("avx"))) void RowRunAvx(const float* v, int64_t n, float z, float s, float top,
                                              uint16_t* out, float* deq) {
  const __m256 vz = _mm256_set1_ps(z), vs = _mm256_set1_ps(s), vt = _mm256_set1_ps(top);
  const __m256 v0 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(v + k), vz), vs),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_max_ps(v0, _mm256_min_ps(vt, q));  // (0 > q ? 0 : q) of (top < q ? top : q)
    const __m256i c = _mm256_cvttps_epi32(q);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extractf128_si256(c, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), packed);
    _mm256_storeu_ps(deq + k, _mm256_add_ps(vz, _mm256_mul_ps(vs, q)));
  }
  QuantizeRowRunScalar(v + k, n - k, z, s, top, out + k, deq + k);
}

// The values' least and largest eight lanes at a time, in any order: without a NaN the order matters only
// when the result is a zero (-0 or +0, whichever came first), so a NaN anywhere or a zero result takes the
// scalar fold instead.
__attribute__((target("avx"))) void FoldAvx(const float* v, int64_t n, float* lo, float* hi) {
  if (n < 16 || std::isnan(*lo) || std::isnan(*hi)) return FoldRowRangeScalar(v, n, lo, hi);
  __m256 mn = _mm256_loadu_ps(v), mx = mn, nan = _mm256_cmp_ps(mn, mn, _CMP_UNORD_Q);
  int64_t k = 8;
  for (; k + 8 <= n; k += 8) {
    const __m256 x = _mm256_loadu_ps(v + k);
    mn = _mm256_min_ps(mn, x), mx = _mm256_max_ps(mx, x);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  alignas(32) float a[8], b[8];
  _mm256_store_ps(a, mn), _mm256_store_ps(b, mx);
  bool any_nan = _mm256_movemask_ps(nan) != 0;
  float l = a[0], h = b[0];
  for (int i = 1; i < 8; ++i) l = std::min(l, a[i]), h = std::max(h, b[i]);
  for (; k < n; ++k) any_nan |= std::isnan(v[k]), l = std::min(l, v[k]), h = std::max(h, v[k]);
  if (any_nan || l == 0.0f || h == 0.0f) return FoldRowRangeScalar(v, n, lo, hi);
  *lo = std::min(*lo, l), *hi = std::max(*hi, h);
}
#endif

}  // namespace

void QuantizeRowRunScalar(const float* v, int64_t n, float z, float s, float top, uint16_t* out, float* deq) {
  for (int64_t k = 0; k < n; ++k) {
    const float q = std::clamp(std::nearbyint((v[k] - z) / s), 0.0f, top);
    out[k] = static_cast<uint16_t>(static_cast<int32_t>(q));
    deq[k] = z + s * q;  // built with -ffp-contract=off: no fused multiply-add
  }
}

void FoldRowRange(const float* v, int64_t n, float* lo, float* hi) {
#if defined(__x86_64__)
  static const auto fold = __builtin_cpu_supports("avx") ? FoldAvx : FoldRowRangeScalar;
#else
  constexpr auto fold = FoldRowRangeScalar;
#endif
  fold(v, n, lo, hi);
}

void FoldRowRangeScalar(const float* v, int64_t n, float* lo, float* hi) {
  float l = *lo, h = *hi;
  for (int64_t k = 0; k < n; ++k) {
    const float x = v[k];
    l = std::isnan(x) ? x : std::min(l, x);
    h = std::isnan(x) ? x : std::max(h, x);
  }
  *lo = l, *hi = h;
}

void QuantizeRowRun(const float* v, int64_t n, float z, float s, float top, uint16_t* out, float* deq) {
#if defined(__x86_64__)
  static const auto run = __builtin_cpu_supports("avx") ? RowRunAvx : QuantizeRowRunScalar;
#else
  constexpr auto run = QuantizeRowRunScalar;
#endif
  run(v, n, z, s, top, out, deq);
}

}  // namespace deltastore
