// The lossless chunk codecs. Every encoded chunk starts with a codec id byte and a codec version byte
// (docs/chunk_format.md); decoders check both and reject what they do not know.
//
// A chunk holds up to kChunkSize raw bytes of one tensor (or of a side file). A delta chunk is encoded
// against the base tensor's bytes at the same offsets, which the decoder must be given.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "codec/dtype.h"
#include "common/status.h"

namespace deltastore {

inline constexpr uint64_t kChunkSize = 4ull << 20;  // raw bytes per chunk (a multiple of every dtype size)

enum class CodecId : uint8_t {
  kRaw = 0x00,         // stored as is
  kZstd = 0x01,        // one zstd frame of the raw bytes
  kPlanesZstd = 0x02,  // words split into byte planes, one zstd frame per plane
  kFloatCtx = 0x03,    // context-modelled adaptive range coder for BF16/F16/F32 (codec/float_coder.h)
  kFloatRans = 0x04,   // static-table interleaved rANS for BF16/F16/F32 (codec/float_rans.h)
  kLossy = 0x10,       // lossy delta tensor chunk (codec/lossy_codec.h, docs/lossy_format.md)
};
// The codec version of every chunk, except float-rans chunks, which EncodeChunk writes with version
// kFloatRansVersion (codec/float_rans.h); decoders read version 1 of every codec and every float-rans
// version.
inline constexpr uint8_t kCodecVersion = 1;

// Flags byte after id and version.
inline constexpr uint8_t kChunkFlagDelta = 0x01;  // XOR'd with the base bytes at the same offsets

// Which float coder EncodeChunk uses for BF16/F16/F32 chunks: kFast = the table-driven one (kFloatRans),
// kMax = the adaptive one (kFloatCtx: several times slower; on the inputs of bench/README.md it is not
// smaller, it stays selectable for inputs where adapting within a chunk pays).
enum class EncodeLevel : uint8_t { kFast = 0, kMax = 1 };

struct EncodeOptions {
  int zstd_level = 3;
  EncodeLevel level = EncodeLevel::kFast;
};

// Encodes `raw` (elements of `dtype`); when `base` is non-empty it has the same size and the chunk is
// encoded as a delta against it. Picks the codec by dtype, falls back to kRaw when nothing helps.
std::string EncodeChunk(DType dtype, std::string_view raw, std::string_view base,
                        const EncodeOptions& options = {});

// Decodes a chunk produced by EncodeChunk. `base` must be given (same bytes as at encode time) when the
// chunk is a delta; `expected_size` is the raw size the caller's manifest records.
StatusOr<std::string> DecodeChunk(std::string_view encoded, std::string_view base, uint64_t expected_size);
// The same, into the caller's `size` bytes at `out` (no allocation; `out` holds garbage on an error).
Status DecodeChunkInto(std::string_view encoded, std::string_view base, char* out, uint64_t size);

// True when the encoded chunk needs base bytes to decode.
StatusOr<bool> ChunkIsDelta(std::string_view encoded);

std::string_view CodecName(CodecId id);

// The 12-byte header every chunk starts with (id, version, flags, dtype, u64 raw size).
std::string ChunkHeader(CodecId id, uint8_t flags, DType dtype, uint64_t raw_size);

}  // namespace deltastore
