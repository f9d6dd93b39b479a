// What the rate allocation's probe of a tensor keeps of the pair's bytes as they stream by, piece by piece
// in order (service/lossy_policy.cc): rows 0, s, 2s, ... of the base and of the finetune (what
// ProbeLossyTensor takes), whether every weight is finite, and a fingerprint of the whole pair. A large
// tensor's probe so holds a few MiB of it, never the whole pair (344 MiB of a 4096 x 11008 bf16 tensor).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "codec/dtype.h"
#include "common/xxh128.h"

namespace deltastore {

// Fingerprint of a tensor pair's bytes (XXH3-128 of each): which pair a tensor's probe measurements
// belong to. The same whether the bytes come whole or in pieces.
std::string PairFingerprint(std::string_view base, std::string_view finetune);

class ProbeRows {
 public:
  // Rows of `row_bytes` bytes of `dtype`; every `stride`-th row is kept.
  ProbeRows(DType dtype, uint64_t row_bytes, uint32_t stride);

  // The next piece of both tensors, starting `offset` bytes into each (pieces come in order, each a whole
  // number of elements).
  void Add(uint64_t offset, std::string_view base, std::string_view finetune);

  bool finite() const { return finite_; }
  const std::string& base() const { return base_; }
  const std::string& finetune() const { return finetune_; }
  // Once, after the last piece.
  std::string Fingerprint() const;

 private:
  DType dtype_;
  uint64_t row_bytes_;
  uint32_t stride_;
  bool finite_ = true;
  std::string base_, finetune_;
  Xxh128 base_hash_, finetune_hash_;
};

// Whether every element of `bytes` (of a float dtype; others are always finite) is finite.
bool AllFinite(DType dtype, std::string_view bytes);

}  // namespace deltastore
