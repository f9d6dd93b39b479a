#include "codec/checksum.h"

#include <bit>
#include <cstring>

namespace deltastore {
namespace {

static_assert(std::endian::native == std::endian::little, "the checksum reads little-endian words");

inline uint64_t Mix(uint64_t h, uint64_t w) {
  h = (h ^ w) * kChecksumMul;
  return h ^ (h >> 29);
}

inline uint64_t Word(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

}  // namespace

Checksum4x64State::Checksum4x64State(size_t n)
    : lanes{0x243F6A8885A308D3ull ^ n, 0x13198A2E03707344ull, 0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull},
      len(n) {}

uint32_t Checksum4x64State::Finish(const uint8_t* p) const {
  uint64_t h[4] = {lanes[0], lanes[1], lanes[2], lanes[3]};
  size_t i = done;
  for (; i + 32 <= len; i += 32) {
    for (int k = 0; k < 4; ++k) h[k] = Mix(h[k], Word(p + i + 8 * k));
  }
  for (; i + 8 <= len; i += 8) h[0] = Mix(h[0], Word(p + i));
  uint64_t tail = 0;
  if (i < len) std::memcpy(&tail, p + i, len - i);
  uint64_t r = Mix(h[0], tail);
  for (int k = 1; k < 4; ++k) r = Mix(r, h[k]);
  r *= kChecksumMul;
  return static_cast<uint32_t>(r >> 32);
}

uint32_t Checksum4x64(const uint8_t* p, size_t len) {
  return Checksum4x64State(len).Finish(p);
}

}  // namespace deltastore
