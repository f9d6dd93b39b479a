// Element conversions between the float dtypes and float32 (declared in codec/lossy_codec.h): exact,
// round-to-nearest-even, the same bits on every build (the lossy codec reconstructs through them).
#include <cpuid.h>
#include <immintrin.h>

#include <cstring>

#include "codec/lossy_codec.h"

namespace deltastore {

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (absx < 0x38800000u) {                                               // subnormal or zero in half
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t e = absx >> 23;
    uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 113 - e + 13
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t r = absx + 0xfffu + ((absx >> 13) & 1);  // round to nearest even
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}

float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

namespace {

// Eight values at a time where the CPU can. The lossy search reads a large tensor's pair through
// ToFloat32 once per pass over its rows (gpu/lossy_residual.cc), where the per-element loop took over
// half of a bf16 32000 x 4096 embedding's search. The element conversions finish what the wide loops
// leave, and serve CPUs without AVX2 (or F16C).
template <float (*Convert)(uint16_t)>
void WidenScalar(const char* data, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, data + 2 * i, 2);
    out[i] = Convert(h);
  }
}

// bf16 is the upper half of a float32: a shift.
__attribute__((target("avx2"))) void Bf16ToFloatAvx2(const char* data, size_t n, float* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 2 * i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  WidenScalar<Bf16ToFloat>(data + 2 * i, n - i, out + i);
}

// F16C's conversion is exact, subnormals included, but it quiets a signalling NaN where HalfToFloat
// keeps every payload bit: eight values with a NaN among them take the scalar path.
__attribute__((target("avx2,f16c"))) void HalfToFloatF16c(const char* data, size_t n, float* out) {
  const __m128i magnitude = _mm_set1_epi16(0x7fff), inf = _mm_set1_epi16(0x7c00);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 2 * i));
    if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, magnitude), inf)) != 0) {
      WidenScalar<HalfToFloat>(data + 2 * i, 8, out + i);
    } else {
      _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    }
  }
  WidenScalar<HalfToFloat>(data + 2 * i, n - i, out + i);
}

// CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c").
bool HasF16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}

}  // namespace

bool ToFloat32(DType dtype, const char* data, size_t n, float* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, data, n * 4); return true;
    case DType::kF16: {
      static const auto widen =
          __builtin_cpu_supports("avx2") && HasF16c() ? HalfToFloatF16c : WidenScalar<HalfToFloat>;
      widen(data, n, out);
      return true;
    }
    case DType::kBF16: {
      static const auto widen = __builtin_cpu_supports("avx2") ? Bf16ToFloatAvx2 : WidenScalar<Bf16ToFloat>;
      widen(data, n, out);
      return true;
    }
    default: return false;
  }
}

bool FromFloat32(DType dtype, const float* in, size_t n, char* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, in, n * 4); return true;
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = dtype == DType::kF16 ? FloatToHalf(in[i]) : FloatToBf16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return true;
    default: return false;
  }
}

}  // namespace deltastore
