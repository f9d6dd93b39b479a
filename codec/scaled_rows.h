#pragma once

#include <cstdint>

namespace deltastore {

// A sum of scaled rows: out[j] (j < width) = the sum over i = 0..n-1, in order and starting from 0, of
// val[i] * rows[r_i * width + j], where r_i = idx[i], or i when idx is null. Every product and every sum is
// rounded to float on its own (no fused multiply-add), so every x86-64 CPU gives the same bits: where it has
// AVX, 64, 32 or 8 columns at a time, each lane doing what the scalar loop does. It is a row of a low-rank
// term A B (val: a row of A, rows: B; lossy decoding) and a row of a CSR matrix times a dense one (idx:
// the row's columns; gpu/csr_product.h).
void SumScaledRows(const float* val, const uint32_t* idx, int64_t n, const float* rows, int64_t width,
                   float* out);

}  // namespace deltastore
