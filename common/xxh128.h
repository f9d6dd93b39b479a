// XXH3-128 (xxHash 0.8, libxxhash-dev), streaming: a fast non-cryptographic checksum for bytes whose
// sha256 was already checked when they were written (the file cache's entries). Tens of GB/s on one core.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace deltastore {

class Xxh128 {
 public:
  Xxh128();
  ~Xxh128();
  Xxh128(const Xxh128&) = delete;
  Xxh128& operator=(const Xxh128&) = delete;

  void Update(std::string_view data);
  // The digest as 16 bytes: the low 64 bits then the high 64 bits, each little-endian.
  std::string Finish() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace deltastore
