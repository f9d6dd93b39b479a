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
#endif

}  // namespace

void QuantizeRowRunScalar(const float* v, int64_t n, float z, float s, float top, uint16_t* out, float* deq) {
  for (int64_t k = 0; k < n; ++k) {
    const float q = std::clamp(std::nearbyint((v[k] - z) / s), 0.0f, top);
    out[k] = static_cast<uint16_t>(static_cast<int32_t>(q));
    deq[k] = z + s * q;  // built with -ffp-contract=off: no fused multiply-add
  }
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
