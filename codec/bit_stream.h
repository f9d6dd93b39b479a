// Raw bit fields, least significant bit first, packed little-endian: the bulk stream of near-uniform
// low bits beside an entropy coder's stream. Writer and reader move 8 bytes at a time without a branch
// per field (fields are at most 32 bits).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace deltastore {

static_assert(std::endian::native == std::endian::little, "bit_stream assumes a little-endian host");

class BulkBitWriter {
 public:
  // `max_bytes`: an upper bound of the bytes the fields will take.
  // The buffer is not zero-filled: every byte below the write position is written before Finish.
  explicit BulkBitWriter(size_t max_bytes) : out_(std::make_unique_for_overwrite<char[]>(max_bytes + 16)) {}

  // The write position as a value, for loops that keep it in registers: Begin, Put on the cursor, End.
  struct Cursor {
    char* p;
    uint64_t acc;
    int fill;
    // `v` < 2^nbits, nbits <= kMaxPutBits (the pending bits, fewer than 8, and v fit the 64-bit acc).
    static constexpr int kMaxPutBits = 56;
    [[gnu::always_inline]] void Put(uint64_t v, int nbits) {
      acc |= v << fill;
      fill += nbits;
      std::memcpy(p, &acc, 8);
      const int whole = fill & ~7;
      p += whole >> 3;
      acc >>= whole;
      fill &= 7;
    }
  };
  Cursor Begin() const { return Cursor{out_.get() + pos_, acc_, fill_}; }
  void End(const Cursor& c) {
    pos_ = static_cast<size_t>(c.p - out_.get());
    acc_ = c.acc;
    fill_ = c.fill;
  }

  // `v` < 2^nbits, nbits <= 32.
  [[gnu::always_inline]] void Put(uint32_t v, int nbits) {
    acc_ |= static_cast<uint64_t>(v) << fill_;
    fill_ += nbits;
    std::memcpy(out_.get() + pos_, &acc_, 8);
    const int whole = fill_ & ~7;  // <= 32
    pos_ += static_cast<size_t>(whole >> 3);
    acc_ >>= whole;
    fill_ &= 7;
  }

  // Bits written so far.
  uint64_t bits() const { return pos_ * uint64_t{8} + static_cast<uint64_t>(fill_); }

  // The bytes written, the last one padded with zero bits.
  std::string Finish() {
    std::memcpy(out_.get() + pos_, &acc_, 8);
    return std::string(out_.get(), pos_ + (fill_ > 0 ? 1 : 0));
  }

 private:
  std::unique_ptr<char[]> out_;
  size_t pos_ = 0;
  uint64_t acc_ = 0;
  int fill_ = 0;  // pending bits in acc_, < 8 between calls
};

class BulkBitReader {
 public:
  BulkBitReader(const uint8_t* p, size_t size) : begin_(p), p_(p), end_(p + size) {}

  // Fast path: needs 8 readable bytes at the read position (see FastBytesLeft).
  [[gnu::always_inline]] void Refill() {
    uint64_t w;
    std::memcpy(&w, p_, 8);
    buf_ |= w << count_;
    p_ += (63 - count_) >> 3;
    count_ |= 56;
  }

  // Moves to bit `bit` (0..7) of byte `p` (at or after the current position, nothing read yet since),
  // e.g. after a caller read the bits before it on its own.
  void Seek(const uint8_t* p, int bit) {
    p_ = p;
    buf_ = 0;
    count_ = 0;
    RefillChecked();
    Get(bit);
  }

  // Reads nothing past the end; missing bytes read as zeros (Exhausted() then tells).
  void RefillChecked() {
    if (end_ - p_ >= 8) {
      Refill();
      return;
    }
    while (count_ <= 56) {
      uint64_t b = 0;
      if (p_ != end_) {
        b = *p_++;
      } else {
        ++past_end_;
      }
      buf_ |= b << count_;
      count_ += 8;
    }
  }

  // `nbits` <= 32, after a refill.
  [[gnu::always_inline]] uint32_t Get(int nbits) {
    const uint32_t v = static_cast<uint32_t>(buf_ & ((uint64_t{1} << nbits) - 1));
    buf_ >>= nbits;
    count_ -= nbits;
    return v;
  }

  // Bytes readable at the read position (the fast path needs 8 at each refill).
  size_t BytesLeft() const { return static_cast<size_t>(end_ - p_); }

  // Bits consumed by Get.
  uint64_t Consumed() const {
    return (static_cast<uint64_t>(p_ - begin_) + past_end_) * 8 - static_cast<uint64_t>(count_);
  }

  // The stream was read to its last byte and no further, and its padding bits are zero.
  bool FinishedExactly() {
    const uint64_t size_bits = static_cast<uint64_t>(end_ - begin_) * 8;
    const uint64_t used = Consumed();
    if (used > size_bits || size_bits - used >= 8) return false;
    RefillChecked();
    return Get(static_cast<int>(size_bits - used)) == 0;
  }

 private:
  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  uint64_t buf_ = 0;
  int count_ = 0;
  uint64_t past_end_ = 0;  // zero bytes supplied beyond the end
};

}  // namespace deltastore
