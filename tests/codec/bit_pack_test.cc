// The bit planes of lossy codes (codec/bit_pack.h): the block-at-a-time packer writes what one code at a
// time through a running accumulator writes (the layout of docs/lossy_format.md), for every width, shift
// and length around the 32-code blocks, and unpacking any range of codes gives back their bits, ORed
// into what the output held.
#include "codec/bit_pack.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace deltastore {
namespace {

// Code i's bits at [i * width, (i + 1) * width), bit 0 of a byte first, zeros after the last code.
std::vector<uint8_t> ReferencePack(const std::vector<uint16_t>& codes, int shift, int width) {
  std::vector<uint8_t> out(PackedBytes(codes.size(), width), 0);
  uint64_t bit = 0;
  for (uint16_t c : codes) {
    for (int b = 0; b < width; ++b, ++bit) {
      if ((c >> (shift + b)) & 1) out[bit >> 3] = static_cast<uint8_t>(out[bit >> 3] | (1 << (bit & 7)));
    }
  }
  return out;
}

TEST(BitPackTest, PlanesHoldEachCodesBitsInOrderAndUnpackIntoAnyRange) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> code(0, 0xffff);
  for (int width = 1; width <= 16; ++width) {
    for (int shift : {0, 16 - width, (16 - width) / 2}) {
      for (size_t n :
           {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{64}, size_t{95}, size_t{1000}}) {
        std::vector<uint16_t> codes(n);
        for (auto& c : codes) c = static_cast<uint16_t>(code(rng));
        const std::vector<uint8_t> want = ReferencePack(codes, shift, width);
        std::vector<uint8_t> got(want.size() + 1, 0xa5);  // one guard byte past the plane
        PackPlane(codes.data(), n, shift, width, got.data());
        ASSERT_EQ(got.back(), 0xa5) << "width " << width << " n " << n;
        got.pop_back();
        ASSERT_EQ(got, want) << "width " << width << " shift " << shift << " n " << n;
        // every range that starts or ends inside, at or next to a block edge
        for (uint64_t first : {uint64_t{0}, uint64_t{1}, uint64_t{31}, uint64_t{32}, uint64_t{40}}) {
          for (uint64_t count :
               {uint64_t{0}, uint64_t{1}, uint64_t{31}, uint64_t{32}, uint64_t{65}, uint64_t{900}}) {
            if (first + count > n) continue;
            const uint16_t held = 0x8000;  // ORed, so a bit the plane does not hold stays
            std::vector<uint16_t> out(count, held);
            UnpackPlaneOr(got.data(), first, count, shift, width, out.data());
            const uint32_t mask = ((1u << width) - 1) << shift;
            for (uint64_t j = 0; j < count; ++j) {
              ASSERT_EQ(out[j], static_cast<uint16_t>(held | (codes[first + j] & mask)))
                  << "width " << width << " shift " << shift << " first " << first << " j " << j;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace deltastore
