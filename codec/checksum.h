// A fast non-cryptographic 32-bit checksum of decoded bytes, for corruption detection inside encodings
// (the fast float coder's). Four independent multiply-xorshift lanes over 32-byte blocks, so it runs at
// several GB/s on one core. The value is part of stored formats: it never changes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deltastore {

uint32_t Checksum4x64(const uint8_t* p, size_t len);

}  // namespace deltastore
