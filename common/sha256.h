// SHA-256 through OpenSSL EVP, streaming, and the "sha256:<hex>" digest form.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace deltastore {

// A sha256 digest; printed as 64 lowercase hex characters.
struct Digest {
  std::array<uint8_t, 32> bytes{};

  std::string Hex() const;
  // "sha256:<hex>", the form used on the wire (OCI style).
  std::string ToString() const { return "sha256:" + Hex(); }
  std::string_view Raw() const { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }

  // Accepts "<hex>" or "sha256:<hex>" (64 hex characters, any case).
  static StatusOr<Digest> Parse(std::string_view text);
  static StatusOr<Digest> FromRaw(std::string_view raw);

  auto operator<=>(const Digest&) const = default;
};

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  Digest Finish();

  static Digest Of(std::string_view data);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string HexEncode(std::string_view bytes);

}  // namespace deltastore

template <>
struct std::hash<deltastore::Digest> {
  size_t operator()(const deltastore::Digest& d) const noexcept {
    size_t h;
    static_assert(sizeof(h) <= 32);
    __builtin_memcpy(&h, d.bytes.data(), sizeof(h));
    return h;
  }
};
