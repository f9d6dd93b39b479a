#include "gpu/csr_product.h"

#include "codec/scaled_rows.h"

namespace deltastore {

void CsrTimesDense(const int64_t* crow, const uint32_t* col, const float* val, int64_t rows, const float* X,
                   int64_t samples, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = crow[r];
    SumScaledRows(val + b, col + b, crow[r + 1] - b, X, samples, out + r * samples);
  }
}

}  // namespace deltastore
