#include "gpu/mask_select.h"

#include <array>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deltastore {
namespace {

// SelectBelowScalar from column c on, the output from its k-th element; returns the count.
inline int64_t SelectFrom(int64_t c, int64_t k, const uint8_t* o, const uint8_t* keep, const float* src,
                          const float* scale, int64_t cols, uint32_t* col, float* val) {
  for (; c < cols; ++c) {
    if (o[c] < keep[c]) col[k] = static_cast<uint32_t>(c), val[k] = src[c] * scale[c], ++k;
  }
  return k;
}

#if defined(__x86_64__)
// The lanes of each eight-bit mask, lowest first, then zeros: the permutation that left-packs them.
struct PackTable {
  alignas(32) std::array<std::array<int32_t, 8>, 256> lanes{};
  PackTable() {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int b = 0; b < 8; ++b) {
        if ((m >> b & 1) != 0) lanes[m][n++] = b;
      }
    }
  }
};

// The columns of o[c .. c + 8) below their keep count, as eight bits.
__attribute__((target("avx2"))) inline uint32_t Below8(const uint8_t* o, const uint8_t* keep) {
  const __m128i a = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(o));
  const __m128i k = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep));
  // a >= k exactly where max(a, k) == a
  return static_cast<uint32_t>(~_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(a, k), a))) & 0xffu;
}

__attribute__((target("avx2,popcnt"))) int64_t CountAvx2(const uint8_t* o, const uint8_t* keep,
                                                         int64_t cols) {
  int64_t n = 0, c = 0;
  for (; c + 8 <= cols; c += 8) n += __builtin_popcount(Below8(o + c, keep + c));
  for (; c < cols; ++c) n += o[c] < keep[c] ? 1 : 0;
  return n;
}

// Eight columns at a time: the products of all eight (the same float operation as the scalar loop's),
// permuted so that the kept ones come first, stored whole, and the output advanced by how many were kept.
__attribute__((target("avx2,popcnt"))) int64_t SelectAvx2(const uint8_t* o, const uint8_t* keep,
                                                          const float* src, const float* scale, int64_t cols,
                                                          uint32_t* col, float* val) {
  static const PackTable table;
  int64_t k = 0, c = 0;
  for (; c + 8 <= cols; c += 8) {
    const uint32_t m = Below8(o + c, keep + c);
    if (m == 0) continue;
    const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(table.lanes[m].data()));
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + c), _mm256_loadu_ps(scale + c));
    _mm256_storeu_ps(val + k, _mm256_permutevar8x32_ps(v, perm));
    const __m256i at = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(c)), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(col + k), at);
    k += __builtin_popcount(m);
  }
  return SelectFrom(c, k, o, keep, src, scale, cols, col, val);
}
#endif

int64_t CountScalar(const uint8_t* o, const uint8_t* keep, int64_t cols) {
  int64_t n = 0;
  for (int64_t c = 0; c < cols; ++c) n += o[c] < keep[c] ? 1 : 0;
  return n;
}

}  // namespace

int64_t SelectBelowScalar(const uint8_t* o, const uint8_t* keep, const float* src, const float* scale,
                          int64_t cols, uint32_t* col, float* val) {
  return SelectFrom(0, 0, o, keep, src, scale, cols, col, val);
}

int64_t CountBelow(const uint8_t* o, const uint8_t* keep, int64_t cols) {
#if defined(__x86_64__)
  static const auto count = __builtin_cpu_supports("avx2") ? CountAvx2 : CountScalar;
#else
  constexpr auto count = CountScalar;
#endif
  return count(o, keep, cols);
}

int64_t SelectBelow(const uint8_t* o, const uint8_t* keep, const float* src, const float* scale, int64_t cols,
                    uint32_t* col, float* val) {
#if defined(__x86_64__)
  static const auto select = __builtin_cpu_supports("avx2") ? SelectAvx2 : SelectBelowScalar;
#else
  constexpr auto select = SelectBelowScalar;
#endif
  return select(o, keep, src, scale, cols, col, val);
}

}  // namespace deltastore
