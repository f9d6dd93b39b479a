#include "codec/chunk_codec.h"

#include <zstd.h>

#include <cstring>
#include <vector>

#include "codec/float_coder.h"
#include "codec/float_rans.h"
#include "codec/lossy_codec.h"
#include "common/endian.h"

namespace deltastore {
namespace {

// Header: id, version, flags, dtype, u64 LE raw size.
constexpr size_t kHeaderSize = 12;

}  // namespace

std::string ChunkHeader(CodecId id, uint8_t flags, DType dtype, uint64_t raw_size) {
  std::string h;
  h.push_back(static_cast<char>(id));
  h.push_back(static_cast<char>(kCodecVersion));
  h.push_back(static_cast<char>(flags));
  h.push_back(static_cast<char>(dtype));
  PutLE(&h, raw_size, 8);
  return h;
}

namespace {
std::string Header(CodecId id, uint8_t flags, DType dtype, uint64_t raw_size) {
  std::string h = ChunkHeader(id, flags, dtype, raw_size);
  if (id == CodecId::kFloatRans) h[1] = static_cast<char>(kFloatRansVersion);
  return h;
}

// Versions a decoder reads: 1 for every codec, and each later version of the float-rans payload.
bool KnownVersion(CodecId id, uint8_t version) {
  return version == kCodecVersion ||
         (id == CodecId::kFloatRans && version >= 1 && version <= kFloatRansVersion);
}

void ZstdAppend(std::string* out, std::string_view in, int level) {
  size_t bound = ZSTD_compressBound(in.size());
  size_t pos = out->size();
  out->resize(pos + bound);
  size_t n = ZSTD_compress(out->data() + pos, bound, in.data(), in.size(), level);
  // ZSTD_compress only fails on a too-small buffer, which compressBound rules out.
  out->resize(pos + (ZSTD_isError(n) ? 0 : n));
}

Status ZstdDecode(std::string_view in, char* out, size_t out_size) {
  unsigned long long frame = ZSTD_getFrameContentSize(in.data(), in.size());
  if (frame == ZSTD_CONTENTSIZE_ERROR || frame != out_size) return Corruption("zstd frame has a wrong size");
  size_t n = ZSTD_decompress(out, out_size, in.data(), in.size());
  if (ZSTD_isError(n) || n != out_size) return Corruption(std::string("zstd: ") + ZSTD_getErrorName(n));
  return OkStatus();
}

std::string XorBytes(std::string_view a, std::string_view b) {
  std::string out(a.size(), '\0');
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

// Planes: u8 word size, then per plane u32 LE compressed size, then the frames.
std::string EncodePlanes(std::string_view raw, size_t word, int level) {
  size_t n = raw.size() / word;
  std::string out;
  out.push_back(static_cast<char>(word));
  std::string plane(n, '\0');
  std::string frames;
  for (size_t p = 0; p < word; ++p) {
    for (size_t i = 0; i < n; ++i) plane[i] = raw[i * word + p];
    size_t before = frames.size();
    ZstdAppend(&frames, plane, level);
    PutLE(&out, frames.size() - before, 4);
  }
  return out + frames;
}

Status DecodePlanes(std::string_view payload, char* out, size_t raw_size) {
  if (payload.empty()) return Corruption("planes chunk is empty");
  size_t word = static_cast<uint8_t>(payload[0]);
  if (word == 0 || word > 8 || raw_size % word != 0) return Corruption("planes chunk has a bad word size");
  if (payload.size() < 1 + 4 * word) return Corruption("planes chunk is truncated");
  size_t n = raw_size / word;
  std::vector<char> plane(n);
  size_t pos = 1 + 4 * word;
  for (size_t p = 0; p < word; ++p) {
    size_t len = GetLE(payload.data() + 1 + 4 * p, 4);
    if (len > payload.size() - pos) return Corruption("planes chunk is truncated");
    DS_RETURN_IF_ERROR(ZstdDecode(payload.substr(pos, len), plane.data(), n));
    for (size_t i = 0; i < n; ++i) out[i * word + p] = plane[i];
    pos += len;
  }
  if (pos != payload.size()) return Corruption("planes chunk has trailing bytes");
  return OkStatus();
}

std::optional<FloatKind> FloatKindOf(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return FloatKind::kBF16;
    case DType::kF16: return FloatKind::kF16;
    case DType::kF32: return FloatKind::kF32;
    default: return std::nullopt;
  }
}

}  // namespace

std::string_view CodecName(CodecId id) {
  switch (id) {
    case CodecId::kRaw: return "raw";
    case CodecId::kZstd: return "zstd";
    case CodecId::kPlanesZstd: return "planes-zstd";
    case CodecId::kFloatCtx: return "float-ctx";
    case CodecId::kFloatRans: return "float-rans";
    case CodecId::kLossy: return "lossy";
  }
  return "unknown";
}

std::string EncodeChunk(DType dtype, std::string_view raw, std::string_view base,
                        const EncodeOptions& options) {
  const bool delta = !base.empty();
  const uint8_t flags = delta ? kChunkFlagDelta : 0;
  size_t word = DTypeSize(dtype);
  std::string best;
  if (auto kind = FloatKindOf(dtype); kind && raw.size() % word == 0) {
    const auto* data = reinterpret_cast<const uint8_t*>(raw.data());
    const auto* base_data = delta ? reinterpret_cast<const uint8_t*>(base.data()) : nullptr;
    if (options.level == EncodeLevel::kMax) {
      best = Header(CodecId::kFloatCtx, flags, dtype, raw.size()) +
             EncodeFloats(*kind, data, base_data, raw.size() / word);
    } else {
      best = Header(CodecId::kFloatRans, flags, dtype, raw.size()) +
             EncodeFloatsRans(*kind, data, base_data, raw.size() / word);
    }
  } else {
    std::string input = delta ? XorBytes(raw, base) : std::string(raw);
    if (word > 1 && raw.size() % word == 0) {
      best = Header(CodecId::kPlanesZstd, flags, dtype, raw.size()) +
             EncodePlanes(input, word, options.zstd_level);
    } else {
      best = Header(CodecId::kZstd, flags, dtype, raw.size());
      ZstdAppend(&best, input, options.zstd_level);
    }
  }
  if (best.size() >= raw.size() + kHeaderSize) {
    // Incompressible: store as is (never a delta, so it decodes without the base).
    best = Header(CodecId::kRaw, 0, dtype, raw.size());
    best.append(raw);
  }
  return best;
}

StatusOr<bool> ChunkIsDelta(std::string_view encoded) {
  if (encoded.size() < kHeaderSize) return Corruption("chunk is shorter than its header");
  return (static_cast<uint8_t>(encoded[2]) & kChunkFlagDelta) != 0;
}

Status DecodeChunkInto(std::string_view encoded, std::string_view base, char* out, uint64_t size) {
  if (encoded.size() < kHeaderSize) return Corruption("chunk is shorter than its header");
  auto id = static_cast<CodecId>(encoded[0]);
  uint8_t version = static_cast<uint8_t>(encoded[1]);
  uint8_t flags = static_cast<uint8_t>(encoded[2]);
  auto dtype = static_cast<DType>(encoded[3]);
  uint64_t raw_size = GetLE(encoded.data() + 4, 8);
  if (id == CodecId::kLossy) {
    if (raw_size != size) return Corruption("chunk raw size does not match the manifest");
    std::string decoded;
    DS_RETURN_IF_ERROR(DecodeLossyChunk(encoded, base, &decoded));
    if (decoded.size() != size) return Corruption("lossy chunk decodes to a wrong size");
    std::memcpy(out, decoded.data(), size);
    return OkStatus();
  }
  if (!KnownVersion(id, version)) {
    return Corruption("chunk codec " + std::string(CodecName(id)) + " version " + std::to_string(version) +
                      " is not supported by this build");
  }
  if (raw_size != size) return Corruption("chunk raw size does not match the manifest");
  if (raw_size > kChunkSize) return Corruption("chunk is larger than the format allows");
  if (DTypeSize(dtype) == 0 || (flags & ~kChunkFlagDelta) != 0) return Corruption("chunk header is invalid");
  const bool delta = (flags & kChunkFlagDelta) != 0;
  if (delta && base.size() != raw_size)
    return InvalidArgument("delta chunk needs base bytes of the same size");
  std::string_view payload = encoded.substr(kHeaderSize);
  switch (id) {
    case CodecId::kRaw:
      if (payload.size() != raw_size || delta) return Corruption("raw chunk has a wrong size");
      std::memcpy(out, payload.data(), raw_size);
      return OkStatus();
    case CodecId::kZstd: DS_RETURN_IF_ERROR(ZstdDecode(payload, out, raw_size)); break;
    case CodecId::kPlanesZstd: DS_RETURN_IF_ERROR(DecodePlanes(payload, out, raw_size)); break;
    case CodecId::kFloatCtx:
    case CodecId::kFloatRans: {
      auto kind = FloatKindOf(dtype);
      size_t word = DTypeSize(dtype);
      if (!kind || raw_size % word != 0) return Corruption("float chunk has a non-float dtype");
      const auto* base_data = delta ? reinterpret_cast<const uint8_t*>(base.data()) : nullptr;
      auto* dst = reinterpret_cast<uint8_t*>(out);
      // The float coders undo the delta themselves.
      return id == CodecId::kFloatCtx
                 ? DecodeFloats(*kind, payload, base_data, raw_size / word, dst)
                 : DecodeFloatsRans(*kind, payload, base_data, raw_size / word, dst, version);
    }
    default: return Corruption("unknown chunk codec id " + std::to_string(static_cast<int>(id)));
  }
  if (delta) {
    for (size_t i = 0; i < raw_size; ++i) out[i] ^= base[i];
  }
  return OkStatus();
}

StatusOr<std::string> DecodeChunk(std::string_view encoded, std::string_view base, uint64_t expected_size) {
  if (encoded.size() >= kHeaderSize && static_cast<CodecId>(encoded[0]) == CodecId::kLossy) {
    // Lossy chunks hold a whole tensor (they may exceed kChunkSize): decoded once, not copied.
    if (GetLE(encoded.data() + 4, 8) != expected_size)
      return Corruption("chunk raw size does not match the manifest");
    std::string out;
    DS_RETURN_IF_ERROR(DecodeLossyChunk(encoded, base, &out));
    return out;
  }
  if (expected_size > kChunkSize) return Corruption("chunk is larger than the format allows");
  std::string out(expected_size, '\0');
  DS_RETURN_IF_ERROR(DecodeChunkInto(encoded, base, out.data(), expected_size));
  return out;
}

}  // namespace deltastore
