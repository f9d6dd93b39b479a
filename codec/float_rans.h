// A fast lossless coder for floating-point tensor data (BF16, F16, F32): the modelling of the float
// coder (codec/float_coder.h) with static tables, coded by an interleaved rANS.
//
// Delta mode (a finetune against its base): d = |f| - |b| in ulps is coded as a symbol (bit length of
// |d|, sign, the bit below the leading one) in a context of the base exponent and of the difference size
// of the previous values; the remaining bits of d are stored raw in bulk; a sign change is an escape
// symbol giving the new exponent relative to the base's (version 1: an escape, then the exponent from a
// table of its own), then the mantissa raw. Standalone mode: the exponent
// as an offset from the largest one, the sign and the top two mantissa bits as one symbol in the
// context of the previous exponent, the other mantissa bits raw. When a sample says the values code
// smaller without the base (an unrelated base), they are coded standalone.
//
// A first pass counts the symbols per context; contexts are merged where a table costs more than it
// saves; the frequencies (12-bit) are stored in the encoding, one byte per symbol. Values are dealt to
// 8 or 32 interleaved lanes, each with its own rANS state and context history, decoded in turn, so a core
// works on independent dependency chains (16 lanes per AVX-512 vector where the CPU has it). Everything is
// integer arithmetic: the output is identical on every build and platform. An encoding carries a checksum of
// the decoded values; when coding does not help, the values are stored raw. Format:
// docs/float_coder_format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "codec/float_coder.h"
#include "common/status.h"

namespace deltastore {

// The payload version EncodeFloatsRans writes (the chunk header's codec version of a float-rans chunk).
// Version 1: 1 or 8 lanes, sign changes code their new exponent with a table of their own. Version 2:
// up to 32 lanes (decoded 16 at a time with AVX-512 where the CPU has it), a sign change is one symbol of
// the delta alphabet (the new exponent relative to the base's). Version 3: as version 2, and F32 takes
// 32 lanes too (8192 values or more). All decode forever.
inline constexpr int kFloatRansVersion = 3;

// As EncodeFloats (codec/float_coder.h): n elements at `data`, coded against `base` (n elements) when
// it is non-null. The output records neither n nor the base. Empty only for a kind outside the enum or
// an unknown version (version 1 is still written for tests and fuzz seeds).
std::string EncodeFloatsRans(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n,
                             int version = kFloatRansVersion);

// As DecodeFloats: kCorruption on truncated or corrupt input, kInvalidArgument when a base is needed but
// not given, or the kind or version is unknown. On error the contents of `out` are unspecified.
Status DecodeFloatsRans(FloatKind kind, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out,
                        int version = kFloatRansVersion);

}  // namespace deltastore
