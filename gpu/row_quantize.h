// The uniform quantization of one row's kept values on the CPU, without libtorch: the codes a lossy
// candidate stores and the values the codec will rebuild from them.
#pragma once

#include <cstdint>

namespace deltastore {

// For each of the n values v[k]: q = clamp(round_half_even((v[k] - z) / s), 0, top) as float (std::clamp's
// result, -0 included), out[k] = q as an integer and deq[k] = z + s * q, the product rounded before the
// sum: each step the float operation libtorch's tensor expressions take, so the same bits on every x86-64
// CPU whether or not it has AVX.
void QuantizeRowRun(const float* v, int64_t n, float z, float s, float top, uint16_t* out, float* deq);
// The same, one value at a time (what QuantizeRowRun does without AVX, and its tail).
void QuantizeRowRunScalar(const float* v, int64_t n, float z, float s, float top, uint16_t* out, float* deq);

// Folds the n values v[k] into one row's range, in order: *lo = isnan(v) ? v : std::min(*lo, v), and
// *hi likewise with std::max, which is what libtorch's CPU scatter_reduce ("amin" / "amax") does to each
// element of a 1-D index in turn: a NaN sticks, and of -0 and +0 the first one met stays.
void FoldRowRange(const float* v, int64_t n, float* lo, float* hi);
// The same, one value at a time (what FoldRowRange does without AVX, and where order decides).
void FoldRowRangeScalar(const float* v, int64_t n, float* lo, float* hi);

}  // namespace deltastore
