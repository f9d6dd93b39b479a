// Test data for the float coders' tests (float_coder_test.cc, float_rans_test.cc): values of each float
// kind as little-endian bytes, weights-like and finetune-like generators, and a small safetensors reader.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/float_coder.h"

namespace deltastore::float_test {

inline constexpr FloatKind kAllKinds[] = {FloatKind::kBF16, FloatKind::kF16, FloatKind::kF32};

inline const char* KindName(FloatKind kind) {
  switch (kind) {
    case FloatKind::kBF16: return "bf16";
    case FloatKind::kF16: return "f16";
    case FloatKind::kF32: return "f32";
  }
  return "?";
}

// n elements of `kind` as little-endian bytes.
class Values {
 public:
  Values(FloatKind kind, size_t n) : width_(FloatKindSize(kind)), bytes_(n * width_) {}
  size_t size() const { return bytes_.size() / width_; }
  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* data() { return bytes_.data(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  uint32_t Get(size_t i) const {
    uint32_t v = 0;
    std::memcpy(&v, &bytes_[i * width_], width_);
    return v;
  }
  void Set(size_t i, uint32_t v) { std::memcpy(&bytes_[i * width_], &v, width_); }

 private:
  size_t width_;
  std::vector<uint8_t> bytes_;
};

inline uint32_t F32Bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

// Rounds to nearest even (NaN stays NaN).
inline uint32_t ToBF16(float f) {
  const uint32_t b = F32Bits(f);
  if (std::isnan(f)) return (b >> 16) | 0x40;
  return (b + 0x7FFF + ((b >> 16) & 1)) >> 16;
}

// Truncating conversion, good enough for test data (normal range, denormals flushed).
inline uint32_t ToF16(float f) {
  const uint32_t b = F32Bits(f);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int e = static_cast<int>((b >> 23) & 0xFF) - 127 + 15;
  if (e <= 0) return sign;
  if (e >= 31) return sign | 0x7C00;
  return sign | (static_cast<uint32_t>(e) << 10) | ((b >> 13) & 0x3FF);
}

inline uint32_t ToKind(FloatKind kind, float f) {
  switch (kind) {
    case FloatKind::kBF16: return ToBF16(f);
    case FloatKind::kF16: return ToF16(f);
    case FloatKind::kF32: return F32Bits(f);
  }
  return 0;
}

inline Values RandomBits(FloatKind kind, size_t n, uint64_t seed) {
  Values v(kind, n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; ++i) v.Set(i, static_cast<uint32_t>(rng()));
  return v;
}

// Weights-like values: normal(0, scale).
inline Values Gaussian(FloatKind kind, size_t n, uint64_t seed, float scale = 0.05f) {
  Values v(kind, n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  for (size_t i = 0; i < n; ++i) v.Set(i, ToKind(kind, dist(rng)));
  return v;
}

// A "finetune" of `base`: each value plus small noise, computed in f32 and rounded back.
inline Values Finetune(FloatKind kind, const Values& base, uint64_t seed, float noise = 0.002f) {
  Values v(kind, base.size());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, noise);
  for (size_t i = 0; i < base.size(); ++i) {
    const uint32_t b = base.Get(i);
    float f = 0;
    switch (kind) {
      case FloatKind::kBF16: f = std::bit_cast<float>(b << 16); break;
      case FloatKind::kF32: f = std::bit_cast<float>(b); break;
      case FloatKind::kF16: {
        const int e = static_cast<int>((b >> 10) & 0x1F);
        const float mag = e == 0 ? 0.0f : std::ldexp(static_cast<float>(0x400 | (b & 0x3FF)), e - 25);
        f = (b & 0x8000) ? -mag : mag;
        break;
      }
    }
    v.Set(i, ToKind(kind, f + dist(rng)));
  }
  return v;
}

struct Tensor {
  std::string dtype;
  std::string bytes;
};

// name -> tensor, from a safetensors file.
inline bool ReadSafetensors(const std::string& path, std::map<std::string, Tensor>* tensors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (file.size() < 8) return false;
  uint64_t header_len;
  std::memcpy(&header_len, file.data(), 8);
  if (header_len > file.size() - 8) return false;
  const nlohmann::json header = nlohmann::json::parse(file.substr(8, header_len));
  const size_t data_start = 8 + header_len;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = info["data_offsets"][0];
    const uint64_t end = info["data_offsets"][1];
    if (begin > end || data_start + end > file.size()) return false;
    (*tensors)[name] = Tensor{info["dtype"], file.substr(data_start + begin, end - begin)};
  }
  return true;
}

// The bytes of a hex string (golden payloads written into the tests).
inline std::string FromHex(const char* hex) {
  std::string out;
  for (const char* p = hex; p[0] != 0 && p[1] != 0; p += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(p, 2), nullptr, 16)));
  return out;
}

}  // namespace deltastore::float_test
