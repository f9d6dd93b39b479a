#include "codec/bit_pack.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace deltastore {
namespace {

// 32 codes of W bits fill exactly W 32-bit words, so the planes are cut into such blocks, each packed by
// a loop the compiler unrolls with constant shifts; the ends go a code (or a bit) at a time. A block was
// ~5x faster than one code at a time through a running accumulator (the lossy search encodes every
// candidate it measures).
constexpr int kBlock = 32;

void StoreLE32(uint8_t* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t LoadLE32(const uint8_t* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(in[i]) << (8 * i);
  return v;
}

template <int W>
void PackBlocks(const uint16_t* codes, size_t blocks, int shift, uint8_t* out) {
  constexpr uint32_t kMask = (1u << W) - 1;
  for (size_t b = 0; b < blocks; ++b, codes += kBlock, out += 4 * W) {
    uint64_t acc = 0;
    int n = 0, word = 0;
#pragma GCC unroll 32
    for (int i = 0; i < kBlock; ++i) {
      acc |= static_cast<uint64_t>((codes[i] >> shift) & kMask) << n;
      n += W;
      if (n >= 32) {
        StoreLE32(out + 4 * word++, static_cast<uint32_t>(acc));
        acc >>= 32;
        n -= 32;
      }
    }
  }
}

template <int W>
void UnpackBlocks(const uint8_t* in, size_t blocks, int shift, uint16_t* out) {
  constexpr uint32_t kMask = (1u << W) - 1;
  for (size_t b = 0; b < blocks; ++b, in += 4 * W, out += kBlock) {
    uint64_t acc = 0;
    int n = 0, word = 0;
#pragma GCC unroll 32
    for (int i = 0; i < kBlock; ++i) {
      if (n < W) {
        acc |= static_cast<uint64_t>(LoadLE32(in + 4 * word++)) << n;
        n += 32;
      }
      out[i] = static_cast<uint16_t>(out[i] | (static_cast<uint32_t>(acc & kMask) << shift));
      acc >>= W;
      n -= W;
    }
  }
}

// Calls f(std::integral_constant<int, width>) for a width of 1 to 16.
template <class F>
void WithWidth(int width, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (void)((width == I + 1 ? (f(std::integral_constant<int, I + 1>{}), true) : false) || ...);
  }
  (std::make_integer_sequence<int, 16>{});
}

}  // namespace

void PackPlane(const uint16_t* codes, size_t n, int shift, int width, uint8_t* out) {
  const size_t blocks = n / kBlock;
  WithWidth(width, [&](auto w) { PackBlocks<decltype(w)::value>(codes, blocks, shift, out); });
  // the tail, a code at a time from the last block's end (a whole byte)
  const uint32_t mask = (1u << width) - 1;
  uint8_t* at = out + blocks * 4 * static_cast<size_t>(width);
  std::memset(at, 0, PackedBytes(n, width) - blocks * 4 * static_cast<size_t>(width));
  uint64_t bit = 0;
  for (size_t i = blocks * kBlock; i < n; ++i) {
    const uint32_t v = (codes[i] >> shift) & mask;
    for (int b = 0; b < width; ++b, ++bit)
      at[bit >> 3] = static_cast<uint8_t>(at[bit >> 3] | ((v >> b & 1) << (bit & 7)));
  }
}

void UnpackPlaneOr(const uint8_t* plane, uint64_t first, uint64_t n, int shift, int width, uint16_t* out) {
  // one code at a time, bit by bit, up to a block boundary and after the last whole block
  auto slow = [&](uint64_t from, uint64_t to) {
    uint64_t bit = from * static_cast<uint64_t>(width);
    for (uint64_t j = from; j < to; ++j) {
      uint32_t v = 0;
      for (int i = 0; i < width; ++i, ++bit)
        v |= static_cast<uint32_t>(plane[bit >> 3] >> (bit & 7) & 1) << i;
      out[j - first] = static_cast<uint16_t>(out[j - first] | (v << shift));
    }
  };
  const uint64_t end = first + n;
  const uint64_t head = std::min(end, (first + kBlock - 1) / kBlock * kBlock);
  slow(first, head);
  if (head == end) return;
  const uint64_t blocks = (end - head) / kBlock;
  WithWidth(width, [&](auto w) {
    UnpackBlocks<decltype(w)::value>(plane + head / kBlock * 4 * decltype(w)::value, blocks, shift,
                                     out + (head - first));
  });
  slow(head + blocks * kBlock, end);
}

}  // namespace deltastore
