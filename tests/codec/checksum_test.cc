// The fast float coder's output checksum (codec/checksum.h): computed in parts (the four lanes advanced
// over whole 32-byte blocks by the documented step, as the AVX-512 decoders do while they write) it is
// the checksum of the whole input, and it is the value stored formats hold.
#include "codec/checksum.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace deltastore {
namespace {

// The step of codec/checksum.h, lane k with word k of each block, as a vector decoder applies it.
void MixBlocks(const uint8_t* p, size_t upto, Checksum4x64State* s) {
  for (; s->done + 32 <= upto; s->done += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + s->done + 8 * k, 8);
      uint64_t h = (s->lanes[k] ^ w) * kChecksumMul;
      s->lanes[k] = h ^ (h >> 29);
    }
  }
}

TEST(ChecksumTest, InPartsItIsTheChecksumOfTheWhole) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + (i >> 3));
  for (size_t len : {size_t{0}, size_t{1}, size_t{8}, size_t{31}, size_t{32}, size_t{33}, size_t{64},
                     size_t{100}, size_t{257}, size_t{1000}}) {
    const uint32_t whole = Checksum4x64(data.data(), len);
    for (size_t upto = 0; upto <= len; upto += 32) {
      Checksum4x64State parts(len);
      MixBlocks(data.data(), upto, &parts);
      EXPECT_EQ(parts.Finish(data.data()), whole) << "len " << len << ", blocks up to " << upto;
    }
  }
}

TEST(ChecksumTest, ValuesAreThoseStoredFormatsHold) {
  // Fixed values (they are part of the float coder's payloads): a change here breaks stored chunks.
  std::vector<uint8_t> data(100);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Checksum4x64(data.data(), 0), 0xFDD9397Au);
  EXPECT_EQ(Checksum4x64(data.data(), 7), 0xB51E2870u);
  EXPECT_EQ(Checksum4x64(data.data(), 100), 0x3DD0FC0Du);
  EXPECT_NE(Checksum4x64(data.data(), 100), Checksum4x64(data.data(), 99));
}

}  // namespace
}  // namespace deltastore
