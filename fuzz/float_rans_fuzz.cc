// Fuzzes the fast float coder (codec/float_rans.h) on its own, both ways.
//
// Input: byte 0 = mode, bytes 1..2 = n (LE), bytes 3..4 = length L of the next part (LE, clamped), then
// L bytes, then material for the base (repeated to n values; zeros when empty).
//   mode bits 0-1: float kind (0 and 1 = BF16, 2 = F16, 3 = F32);  bit 2: give a base;
//   bit 4: payload version 1 (else the current version, kFloatRansVersion); 8192 values or more take
//          the 32-lane layout (every kind since version 3) and its AVX-512 decoder where the CPU has one;
//   bit 3: encoder round trip: the L bytes (repeated to n values) are values to encode, against the
//          base when bit 2 is set, and must decode to themselves;
//   else:  the L bytes are an encoding, decoded into n values; what decodes is encoded again and
//          must decode to the same values (with the vector and the scalar decoder).
#include <cstring>
#include <string>

#include "codec/float_rans.h"
#include "codec/float_rans_simd.h"
#include "fuzz/fuzz_util.h"

using namespace deltastore;

namespace {

FloatKind KindOf(uint8_t mode) {
  switch (mode & 3) {
    case 2: return FloatKind::kF16;
    case 3: return FloatKind::kF32;
    default: return FloatKind::kBF16;
  }
}

void CheckRoundTrip(FloatKind kind, const std::string& values, const uint8_t* base, size_t n, int version) {
  const auto* data = reinterpret_cast<const uint8_t*>(values.data());
  const std::string enc = EncodeFloatsRans(kind, data, base, n, version);
  DS_FUZZ_CHECK(!enc.empty(), "empty encoding");
  DS_FUZZ_CHECK(enc.size() <= 5 + values.size(), "encoding of %zu bytes is larger than raw + 5: %zu",
                values.size(), enc.size());
  DS_FUZZ_CHECK(enc == EncodeFloatsRans(kind, data, base, n, version), "encoding is not deterministic");
  std::string out(values.size(), '\0');
  const Status s = DecodeFloatsRans(kind, enc, base, n, reinterpret_cast<uint8_t*>(out.data()), version);
  DS_FUZZ_CHECK(s.ok(), "own encoding does not decode: %s", s.ToString().c_str());
  DS_FUZZ_CHECK(out == values, "own encoding decodes to different values");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const uint8_t mode = data[0];
  const FloatKind kind = KindOf(mode);
  const size_t width = FloatKindSize(kind);
  const size_t n = fuzz::LoadLE(data + 1, 2);
  const size_t len = std::min<size_t>(fuzz::LoadLE(data + 3, 2), size - 5);
  const std::string_view part(reinterpret_cast<const char*>(data + 5), len);
  const std::string_view material(reinterpret_cast<const char*>(data + 5 + len), size - 5 - len);
  const std::string base = fuzz::Cyclic(material, n * width);
  const uint8_t* base_ptr = (mode & 4) ? reinterpret_cast<const uint8_t*>(base.data()) : nullptr;
  const int version = (mode & 16) ? 1 : kFloatRansVersion;

  if (mode & 8) {
    CheckRoundTrip(kind, fuzz::Cyclic(part, n * width), base_ptr, n, version);
    return 0;
  }
  std::string out(n * width, '\0');
  const Status s = DecodeFloatsRans(kind, part, base_ptr, n, reinterpret_cast<uint8_t*>(out.data()), version);
  if (!s.ok()) {
    DS_FUZZ_CHECK(fuzz::IsOneOf(s, {StatusCode::kCorruption, StatusCode::kInvalidArgument}),
                  "unexpected error code: %s", s.ToString().c_str());
    DS_FUZZ_CHECK(s.code() != StatusCode::kInvalidArgument || base_ptr == nullptr,
                  "InvalidArgument although a base was given: %s", s.ToString().c_str());
    return 0;
  }
  // The scalar decoder gives the same values as the vector one (where the CPU has it).
  if (float_rans::SimdEnabled()) {
    std::string scalar(n * width, '\0');
    float_rans::SetSimdEnabled(false);
    const Status s2 =
        DecodeFloatsRans(kind, part, base_ptr, n, reinterpret_cast<uint8_t*>(scalar.data()), version);
    float_rans::SetSimdEnabled(true);
    DS_FUZZ_CHECK(s2.ok() && scalar == out, "the scalar decoder disagrees with the vector one");
  }
  CheckRoundTrip(kind, out, base_ptr, n, version);
  return 0;
}
