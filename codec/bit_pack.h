// Bit planes of a lossy chunk's codes (docs/lossy_format.md): bits [shift, shift + width) of each code,
// code i at bits [i * width, (i + 1) * width) of the plane, bit 0 of a byte first.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deltastore {

// Bytes a plane of n codes `width` bits wide takes: ceil(n * width / 8).
inline size_t PackedBytes(size_t n, int width) {
  return (n * static_cast<size_t>(width) + 7) / 8;
}

// Writes the plane of codes[0 .. n) (width 1 to 16) into out[0 .. PackedBytes(n, width)); the bits past
// the last code are zero.
void PackPlane(const uint16_t* codes, size_t n, int shift, int width, uint8_t* out);

// ORs codes [first, first + n) of a plane, shifted left by `shift`, into out[0 .. n).
void UnpackPlaneOr(const uint8_t* plane, uint64_t first, uint64_t n, int shift, int width, uint16_t* out);

}  // namespace deltastore
