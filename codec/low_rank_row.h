#pragma once

#include <cstdint>

namespace deltastore {

// One row of a low-rank term L = A B: out[j] = sum over k = 0..rank-1, in order, of a[k] * b[k * cols + j],
// starting from 0, with every product and every sum rounded on its own (no fused multiply-add), so that
// every build and every CPU gives the same bits. `a` is the row of A (rank values), `b` is B (rank x cols,
// row-major). Eight columns at a time where the CPU has AVX: each lane does what the scalar loop does.
void LowRankRow(const float* a, const float* b, uint32_t rank, uint32_t cols, float* out);

}  // namespace deltastore
