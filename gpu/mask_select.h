// One row's kept elements of a group mask on the CPU, without libtorch: the shuffle step of each column
// against its group's keep count (gpu/lossy_internal.h, MaskCache), left-packed into column numbers and
// unbiased values.
#pragma once

#include <cstdint>

namespace deltastore {

// How many of the row's `cols` columns have o[c] < keep[c].
int64_t CountBelow(const uint8_t* o, const uint8_t* keep, int64_t cols);

// Room SelectBelow needs past the last element it keeps: it stores eight lanes at a time.
constexpr int64_t kSelectSlack = 8;

// For each column c with o[c] < keep[c], in order: col[k] = c and val[k] = src[c] * scale[c] (one float
// product); returns how many. col and val need room for that many plus kSelectSlack.
int64_t SelectBelow(const uint8_t* o, const uint8_t* keep, const float* src, const float* scale, int64_t cols,
                    uint32_t* col, float* val);
// The same, one column at a time (what SelectBelow does without AVX2, and its tail).
int64_t SelectBelowScalar(const uint8_t* o, const uint8_t* keep, const float* src, const float* scale,
                          int64_t cols, uint32_t* col, float* val);

}  // namespace deltastore
