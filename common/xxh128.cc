#include "common/xxh128.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/endian.h"

namespace deltastore {

struct Xxh128::State {
  XXH3_state_t s;
};

Xxh128::Xxh128() : state_(std::make_unique<State>()) {
  XXH3_128bits_reset(&state_->s);
}

Xxh128::~Xxh128() = default;

void Xxh128::Update(std::string_view data) {
  XXH3_128bits_update(&state_->s, data.data(), data.size());
}

std::string Xxh128::Finish() const {
  const XXH128_hash_t h = XXH3_128bits_digest(&state_->s);
  std::string out;
  PutLE(&out, h.low64, 8);
  PutLE(&out, h.high64, 8);
  return out;
}

}  // namespace deltastore
