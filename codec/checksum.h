// A fast non-cryptographic 32-bit checksum of decoded bytes, for corruption detection inside encodings
// (the fast float coder's). Four independent multiply-xorshift lanes over 32-byte blocks, so it runs at
// several GB/s on one core. The value is part of stored formats: it never changes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deltastore {

uint32_t Checksum4x64(const uint8_t* p, size_t len);

// The multiplier of a lane's step: lane k of a 32-byte block's word k (little-endian) is
// h = (h ^ word) * kChecksumMul; h ^= h >> 29.
inline constexpr uint64_t kChecksumMul = 0x9E3779B97F4A7C15ull;

// Checksum4x64 of `len` bytes in parts, for a decoder that mixes whole 32-byte blocks as it writes them
// (the AVX-512 decoders): `lanes` hold the four lanes after the first `done` bytes (a multiple of 32,
// mixed by the steps above); Finish mixes the rest and gives the same value as Checksum4x64.
struct Checksum4x64State {
  explicit Checksum4x64State(size_t len);
  uint32_t Finish(const uint8_t* p) const;  // p: the first byte of all `len`

  uint64_t lanes[4];
  size_t len;
  size_t done = 0;
};

}  // namespace deltastore
