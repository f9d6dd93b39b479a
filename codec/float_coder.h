// A lossless, context-modelled entropy coder for floating-point tensor data (BF16, F16, F32).
//
// Values are coded standalone or as a delta against a base tensor of the same kind and length (a
// finetune against its base model). The core is an LZMA-style adaptive binary range coder; the bits that
// are close to uniformly random (low mantissa bits) go to a separate raw bit stream instead.
//
// Delta mode: with b = base value, f = finetune value, split into sign and magnitude (exponent:mantissa
// as one unsigned integer), the coder codes d = |f| - |b| (the difference in ulps, which stays small
// across exponent changes where an XOR would not) as a token (sign of d, bit length of |d|) in a context
// of the base exponent and of a running estimate of the local delta size, then the top bit below the
// leading one (modelled) and the remaining bits raw. A sign change is an escape token followed by f's
// exponent (modelled) and mantissa (raw).
//
// Standalone mode: the exponent as an offset from the tensor's largest exponent in the context of the
// previous element's, the sign and the top mantissa bits in the context of the exponent, the rest raw.
//
// Trailing mantissa bits that are zero in every value (F16 or BF16 values upcast to F32) are dropped.
// Every encoding carries a checksum of the decoded values, so corrupt input is detected. When coding
// does not help (random bits), the values are stored raw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace deltastore {

enum class FloatKind : uint8_t { kBF16 = 1, kF16 = 2, kF32 = 3 };

// Bytes per element (2 or 4), 0 for a value outside the enum.
size_t FloatKindSize(FloatKind kind);

// Encodes `n` elements at `data` (little-endian words of the kind's width). When `base` is non-null it
// points to n elements of the same kind, and the values are coded as a delta against it. The output does
// not record n, the kind or the base, which the caller must pass to DecodeFloats. Returns an empty string
// only for a `kind` outside the enum.
std::string EncodeFloats(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n);

// Decodes `encoded` into `out` (n elements). `base` must be the same n elements given at encode time
// (it may be null for an encoding made without a base). Returns kCorruption on truncated or corrupt
// input, kInvalidArgument when a base is needed but not given or the kind is unknown.
Status DecodeFloats(FloatKind kind, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out);

}  // namespace deltastore
