// The product of a CSR matrix with a dense row-major one on the CPU, without libtorch: a candidate's kept
// elements times the evaluation inputs, the largest product of a lossy search.
#pragma once

#include <cstdint>

namespace deltastore {

// out (rows x samples, row-major) = S @ X, where S has `rows` rows in CSR form (row r's elements are
// val[crow[r] .. crow[r + 1]) in columns col[...], in the order given) and X is row-major with `samples`
// columns. Each output element is summed from zero, one element after another in S's order, every term
// rounded to float before it is added: the same floats on every x86-64 CPU whether or not it has AVX
// (no fused multiply-add), and, as measured, the same as libtorch's CPU product (MKL's generic CSR
// kernel) on AMD EPYC.
void CsrTimesDense(const int64_t* crow, const uint32_t* col, const float* val, int64_t rows, const float* X,
                   int64_t samples, float* out);

}  // namespace deltastore
