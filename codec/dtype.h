// safetensors dtypes and their element sizes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace deltastore {

enum class DType : uint8_t {
  kF64 = 1,
  kF32,
  kF16,
  kBF16,
  kI64,
  kI32,
  kI16,
  kI8,
  kU64,
  kU32,
  kU16,
  kU8,
  kBool,
  kF8E4M3,
  kF8E5M2,
  kF8E8M0,
};

std::optional<DType> ParseDType(std::string_view name);
std::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
bool IsFloat(DType dtype);  // F64/F32/F16/BF16 (F8 variants are stored as raw bytes)

}  // namespace deltastore
