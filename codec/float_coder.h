// A lossless, context-modelled entropy coder for floating-point tensor data (BF16, F16, F32).
//
// Values are coded standalone or as a delta against a base tensor of the same kind and length (a
// finetune against its base model). The core is an adaptive range coder with multi-symbol models (one
// coding step per value, SIMD cdf search and update); bits that are close to uniformly random (the low
// bits of a difference or of a mantissa) bypass it into a separate raw bit stream.
//
// Delta mode: with b = base value, f = value, the coder codes d = |f| - |b| in ulps (magnitudes as
// exponent:mantissa integers, so d stays small across an exponent change, where an XOR would not) as a
// symbol (bit length of |d|, sign of d, the bit below the leading one) in a context of the base exponent
// and of the size of d to expect from the neighbours; the remaining bits of d go raw. A sign change is an
// escape symbol followed by f's exponent (modelled) and mantissa (raw). An unchanged tensor codes to 5
// bytes, and when a sample says the values code smaller without the base (an unrelated base), they are
// coded standalone.
//
// Standalone mode: the exponent as an offset from the tensor's largest one in the context of the previous
// value's, then the sign and the top mantissa bits in the context of the exponent, the rest raw.
//
// Trailing mantissa bits that are zero in every value (F16 or BF16 values upcast to F32) are dropped.
// Every encoding carries a checksum of the decoded values (and of its header), so corrupt input is
// detected. When coding does not help (random bits), the values are stored raw. Everything is integer
// arithmetic: the output is identical on every build and platform.
//
// Measured on the faceres fixture pair (3.49M values; one core): BF16 delta 2.06x, F32 delta 1.34x
// (byte planes + zstd: 1.63x and 1.24x); BF16 standalone 1.46-1.54x. 50-90 MB/s each way for BF16
// delta on the shared 2-core VM (bench/README.md). The chunk codec's default is now the table-driven
// coder with the same modelling (codec/float_rans.h: same or better ratios there, several times
// faster); this one is CodecId::kFloatCtx, EncodeLevel::kMax, and decodes every chunk written with it.
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
// not record n or the base, which the caller must pass to DecodeFloats (it records the kind, to check it).
// Returns an empty string only for a `kind` outside the enum.
std::string EncodeFloats(FloatKind kind, const uint8_t* data, const uint8_t* base, size_t n);

// Decodes `encoded` into `out` (n elements). `base` must be the same n elements given at encode time
// (it may be null for an encoding made without a base). Returns kCorruption on truncated or corrupt
// input, kInvalidArgument when a base is needed but not given or the kind is unknown. On error the
// contents of `out` are unspecified.
Status DecodeFloats(FloatKind kind, std::string_view encoded, const uint8_t* base, size_t n, uint8_t* out);

}  // namespace deltastore
