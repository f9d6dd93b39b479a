#include "codec/float_rans.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "codec/checksum.h"
#include "codec/float_rans_model.h"
#include "codec/float_rans_simd.h"

namespace deltastore {
namespace {

using float_rans::Coded;
using float_rans::Layout;

constexpr uint8_t kModeRaw = 0;
constexpr uint8_t kModeDelta = 1;
constexpr uint8_t kModeStandalone = 2;
constexpr uint8_t kModeSame = 3;

// Fewer values than this go in one lane (8 lanes cost 28 more bytes of states), fewer than the second
// in 8 (32 lanes cost 96 more bytes than 8). 32 lanes: version 2 for the 16-bit kinds, version 3 for
// every kind (the AVX-512 decoder takes them; version 2 kept F32 at 8 for its scalar decoder).
constexpr size_t kMinValuesForLanes = 512;
constexpr size_t kMinValuesFor32Lanes = 8192;
// A delta estimate above the standalone one by less than 1/this is close enough to check.
constexpr uint64_t kCloseDiv = 16;

int LanesLog2(int version, FloatKind kind, size_t n) {
  if (n < kMinValuesForLanes) return 0;
  return n >= kMinValuesFor32Lanes && float_rans::ValidLanes(version, kind, 5) ? 5 : 3;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63; shift += 7) {
    if (in->empty()) return false;
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

std::string Short(uint8_t mode, FloatKind kind, uint32_t sum, const uint8_t* data, size_t bytes) {
  std::string out(1, static_cast<char>((mode << 4) | static_cast<uint8_t>(kind)));
  out.append(reinterpret_cast<const char*>(&sum), 4);
  if (bytes > 0) out.append(reinterpret_cast<const char*>(data), bytes);
  return out;
}

}  // namespace

namespace float_rans {
bool ValidLanes(int version, FloatKind kind, int lanes_log2) {
  const bool wide = version >= 3 || (version == 2 && kind != FloatKind::kF32);
  return lanes_log2 == 0 || lanes_log2 == 3 || (wide && lanes_log2 == 5);
}
}  // namespace float_rans

namespace {

std::string Assemble(uint8_t mode, FloatKind kind, const Layout& layout, uint32_t sum, const Coded& c) {
  std::string out;
  out.reserve(32 + c.size());
  out.push_back(static_cast<char>((mode << 4) | static_cast<uint8_t>(kind)));
  out.push_back(static_cast<char>(layout.tz));
  out.push_back(static_cast<char>(layout.maxe));
  out.push_back(static_cast<char>(layout.lanes_log2));
  out += c.tables;
  PutVarint(&out, c.words.size());
  const uint32_t check = sum ^ Checksum4x64(reinterpret_cast<const uint8_t*>(out.data()), out.size());
  out.append(reinterpret_cast<const char*>(&check), 4);
  out += c.words;
  out += c.raw;
  return out;
}

template <typename F>
int TrailingZeros(uint32_t man_or) {
  man_or &= (uint32_t{1} << F::kManBits) - 1;
  return man_or == 0 ? F::kManBits : std::countr_zero(man_or);
}

// OR of all words and largest magnitude.
template <typename F>
void Scan(const uint8_t* p, size_t n, uint32_t* or_all, uint32_t* max_mag) {
  uint32_t o = 0;
  uint32_t m = 0;
  size_t i = 0;
  if (float_rans::SimdEnabled()) i = float_rans::ScanSimd(F::kWidth, p, n, &o, &m);
  for (; i < n; ++i) {
    const uint32_t v = float_rans::Load<F>(p, i);
    o |= v;
    m = std::max(m, v & F::kMagMask);
  }
  *or_all = o;
  *max_mag = m;
}

template <typename F>
std::string EncodeImpl(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n, int version) {
  const size_t bytes = n * sizeof(typename F::Word);
  const uint32_t sum = Checksum4x64(data, bytes);
  if (n == 0) return Short(kModeRaw, kind, sum, data, 0);
  if (base != nullptr && std::memcmp(data, base, bytes) == 0) return Short(kModeSame, kind, sum, nullptr, 0);
  const int lanes_log2 = LanesLog2(version, kind, n);
  uint32_t data_or, data_max;
  Scan<F>(data, n, &data_or, &data_max);
  const Layout standalone{TrailingZeros<F>(data_or), data_max >> F::kManBits, lanes_log2, version};
  std::string best;
  Coded c;
  if (base != nullptr) {
    uint32_t base_or, base_max;
    Scan<F>(base, n, &base_or, &base_max);
    const Layout delta{TrailingZeros<F>(data_or | base_or), base_max >> F::kManBits, lanes_log2, version};
    // An unrelated base can make the delta worse than coding the values alone. Only one of the two is
    // coded: after its first pass the delta compares its estimate with the standalone one from a sample
    // (order-0, which the standalone coding rarely beats: its tables cost more than its contexts save);
    // when the delta's is above it by less than 1/16, the standalone coding's first pass gives its own
    // estimate and codes only if that is not above the delta's.
    const uint64_t alone_bits = float_rans::EstimateStandaloneBits(kind, data, n, standalone);
    bool alone = false;
    const auto go_on = [&](uint64_t delta_bits) {
      if (delta_bits <= alone_bits) return true;
      alone = delta_bits > alone_bits + alone_bits / kCloseDiv ||
              float_rans::EncodeStandalone(kind, data, n, standalone, delta_bits, &c);
      return !alone;
    };
    if (float_rans::EncodeDelta(kind, data, base, n, delta, go_on, &c)) {
      best = Assemble(kModeDelta, kind, delta, sum, c);
    } else if (!c.words.empty()) {
      best = Assemble(kModeStandalone, kind, standalone, sum, c);  // coded by go_on
    }
  }
  if (best.empty()) {
    float_rans::EncodeStandalone(kind, data, n, standalone, 0, &c);
    best = Assemble(kModeStandalone, kind, standalone, sum, c);
  }
  if (best.size() >= 5 + bytes) return Short(kModeRaw, kind, sum, data, bytes);
  return best;
}

template <typename F>
Status DecodeImpl(FloatKind kind, uint8_t mode, std::string_view encoded, const uint8_t* base, size_t n,
                  uint8_t* out, int version) {
  std::string_view in = encoded.substr(1);
  if (in.size() < 3) return Corruption("float rans: truncated header");
  Layout layout;
  layout.version = version;
  layout.tz = static_cast<uint8_t>(in[0]);
  layout.maxe = static_cast<uint8_t>(in[1]);
  layout.lanes_log2 = static_cast<uint8_t>(in[2]);
  in.remove_prefix(3);
  if (layout.tz > F::kManBits || layout.maxe >= (uint32_t{1} << F::kExpBits) ||
      !float_rans::ValidLanes(version, kind, layout.lanes_log2))
    return Corruption("float rans: bad header");
  float_rans::DeltaTables delta;
  if (mode == kModeDelta) {
    DS_RETURN_IF_ERROR(float_rans::ReadDeltaTables(kind, layout, &in, &delta));
  } else {
    DS_RETURN_IF_ERROR(float_rans::ReadStandaloneTables(kind, layout, &in, &delta.grid));
  }
  uint64_t words_len;
  if (!GetVarint(&in, &words_len) || in.size() < 4) return Corruption("float rans: truncated header");
  // The stored check covers the header too (some header changes would decode to the same values).
  uint32_t sum;
  std::memcpy(&sum, in.data(), 4);
  sum ^= Checksum4x64(reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size() - in.size());
  in.remove_prefix(4);
  if (words_len > in.size()) return Corruption("float rans: truncated stream");
  const std::string_view words = in.substr(0, words_len);
  const std::string_view raw = in.substr(words_len);
  Checksum4x64State check(n * sizeof(typename F::Word));
  const bool ok = mode == kModeDelta
                      ? float_rans::DecodeDelta(kind, layout, delta, words, raw, base, n, out, &check)
                      : float_rans::DecodeStandalone(kind, layout, delta.grid, words, raw, n, out, &check);
  if (!ok) return Corruption("float rans: corrupt stream");
  if (check.Finish(out) != sum) return Corruption("float rans: checksum mismatch");
  return OkStatus();
}

}  // namespace

std::string EncodeFloatsRans(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n,
                             int version) {
  if (version < 1 || version > kFloatRansVersion) return {};
  switch (kind) {
    case FloatKind::kBF16: return EncodeImpl<float_rans::BF16Format>(kind, data, base, n, version);
    case FloatKind::kF16: return EncodeImpl<float_rans::F16Format>(kind, data, base, n, version);
    case FloatKind::kF32: return EncodeImpl<float_rans::F32Format>(kind, data, base, n, version);
  }
  return {};
}

Status DecodeFloatsRans(FloatKind kind, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out,
                        int version) {
  const size_t width = FloatKindSize(kind);
  if (width == 0) return InvalidArgument("float rans: unknown float kind");
  if (version < 1 || version > kFloatRansVersion) return InvalidArgument("float rans: unknown version");
  if (encoded.empty()) return Corruption("float rans: empty input");
  const uint8_t head = static_cast<uint8_t>(encoded[0]);
  if ((head & 0x0F) != static_cast<uint8_t>(kind)) return Corruption("float rans: float kind mismatch");
  const uint8_t mode = head >> 4;
  switch (mode) {
    case kModeRaw:
    case kModeSame: {
      if (encoded.size() != 5 + (mode == kModeRaw ? n * width : 0))
        return Corruption("float rans: size mismatch");
      if (mode == kModeSame && base == nullptr)
        return InvalidArgument("float rans: delta encoding needs the base values");
      uint32_t sum;
      std::memcpy(&sum, encoded.data() + 1, 4);
      if (n > 0)
        std::memcpy(out, mode == kModeRaw ? reinterpret_cast<const uint8_t*>(encoded.data()) + 5 : base,
                    n * width);
      if (Checksum4x64(out, n * width) != sum) return Corruption("float rans: checksum mismatch");
      return OkStatus();
    }
    case kModeDelta:
      if (base == nullptr) return InvalidArgument("float rans: delta encoding needs the base values");
      break;
    case kModeStandalone: break;
    default: return Corruption("float rans: unknown mode");
  }
  switch (kind) {
    case FloatKind::kBF16:
      return DecodeImpl<float_rans::BF16Format>(kind, mode, encoded, base, n, out, version);
    case FloatKind::kF16:
      return DecodeImpl<float_rans::F16Format>(kind, mode, encoded, base, n, out, version);
    case FloatKind::kF32:
      return DecodeImpl<float_rans::F32Format>(kind, mode, encoded, base, n, out, version);
  }
  return InvalidArgument("float rans: unknown float kind");
}

}  // namespace deltastore
