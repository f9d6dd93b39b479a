// For the AVX-512 code of the fast float coder (float_rans_simd.cc: decoders; float_rans_simd_encode.cc:
// the encoder's passes): the intrinsics and the target attributes of the functions that use them. Only
// those two files include it; they run such functions only where SimdEnabled() (float_rans_simd.h).
#pragma once

// GCC 12 warns that the intrinsics' internal undefined vectors (of gathers, reductions) "may be" or "are
// used uninitialized" (they are never read): not a finding of the files that include this.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#define DS_AVX512 __attribute__((target("avx512f,avx512bw,avx512cd,avx512vbmi,avx512dq,avx512vl,popcnt")))
#define DS_AVX512_INLINE \
  __attribute__((target("avx512f,avx512bw,avx512cd,avx512vbmi,avx512dq,avx512vl,popcnt"), always_inline))
