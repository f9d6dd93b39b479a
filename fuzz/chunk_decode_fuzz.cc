// Fuzzes DecodeChunk (every codec: raw, zstd, byte planes, the float coders 0x03 and 0x04, lossy 0x10), with
// and without base bytes of the size the chunk claims.
//
// Input: byte 0 = mode, bytes 1..4 = chunk length L (LE, clamped), then L chunk bytes, then material
// for the base (repeated to the needed size; zeros when empty).
//   mode bit 0: give a base;  bit 1: pass an expected size that differs from the chunk's;
//   bits 2-3:   1 = force codec id 0x03 (adaptive float coder), 2 = force 0x10 (lossy), 3 = force 0x04
//               (fast float coder), 0 = the chunk's own id.
// Expected sizes are bounded (kMaxRawSize) as the manifest bounds them for real callers.
#include "codec/chunk_codec.h"
#include "fuzz/fuzz_util.h"

using namespace deltastore;
using deltastore::fuzz::kMaxRawSize;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const uint8_t mode = data[0];
  size_t len = std::min<size_t>(fuzz::LoadLE(data + 1, 4), size - 5);
  std::string chunk(reinterpret_cast<const char*>(data + 5), len);
  std::string_view material(reinterpret_cast<const char*>(data + 5 + len), size - 5 - len);
  const int force = (mode >> 2) & 3;
  if (!chunk.empty() && force == 1) chunk[0] = static_cast<char>(CodecId::kFloatCtx);
  if (!chunk.empty() && force == 2) chunk[0] = static_cast<char>(CodecId::kLossy);
  if (!chunk.empty() && force == 3) chunk[0] = static_cast<char>(CodecId::kFloatRans);

  uint64_t claimed =
      chunk.size() >= 12 ? fuzz::LoadLE(reinterpret_cast<const uint8_t*>(chunk.data()) + 4, 8) : 0;
  uint64_t expected = claimed;
  if (mode & 2) expected = claimed ^ (1 + material.size() % 64);
  if (expected > kMaxRawSize) return 0;
  std::string base = (mode & 1) ? fuzz::Cyclic(material, expected) : std::string();

  auto is_delta = ChunkIsDelta(chunk);
  DS_FUZZ_CHECK(is_delta.ok() == (chunk.size() >= 12), "ChunkIsDelta disagrees with the header length");

  auto out = DecodeChunk(chunk, base, expected);
  if (!out.ok()) {
    DS_FUZZ_CHECK(fuzz::IsOneOf(out.status(), {StatusCode::kCorruption, StatusCode::kInvalidArgument}),
                  "unexpected error code: %s", out.status().ToString().c_str());
    return 0;
  }
  DS_FUZZ_CHECK(out->size() == expected, "decoded %zu bytes, expected %llu", out->size(),
                (unsigned long long)expected);
  DS_FUZZ_CHECK(expected == claimed, "a chunk decoded to a size other than its header's");
  if (*is_delta) {
    DS_FUZZ_CHECK(base.size() == expected, "a delta chunk decoded without its base");
  }
  // Lossless codecs round-trip: what decoded encodes (against the same base) and decodes back.
  const auto id = static_cast<CodecId>(chunk[0]);
  const auto dtype = static_cast<DType>(chunk[3]);
  if (id != CodecId::kLossy && out->size() <= (64u << 10) && DTypeSize(dtype) != 0) {
    std::string_view b = *is_delta ? std::string_view(base) : std::string_view();
    std::string again = EncodeChunk(dtype, *out, b);
    auto back = DecodeChunk(again, b, out->size());
    DS_FUZZ_CHECK(back.ok(), "re-encoded chunk does not decode: %s", back.status().ToString().c_str());
    DS_FUZZ_CHECK(*back == *out, "re-encoded chunk decodes to different bytes");
  }
  return 0;
}
