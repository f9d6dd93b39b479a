// Lossy delta tensors: the stored form and its exact reconstruction (docs/lossy_format.md).
//
// A lossy tensor reconstructs as  W = (1 + lambda) * W_base + mu * (S + L),  where S is a sparse,
// quantized estimate of the residual delta described by a mask (which elements are kept) and values (what
// they hold), and L = A * B an optional low-rank term with quantized factors (format version 2). Every
// method, ours and the baselines, is a combination of one mask kind and one value kind:
//   DeltaDQ-style: group k-of-g mask (seeded) + b-bit per-row quantization split into planes
//   DARE: Bernoulli mask (seeded) + fp16 values;  random-4bit: Bernoulli + 4-bit quantization
//   BitDelta: dense mask + sign bits with one scale;  top-k: stored positions + 8-bit quantization
//   plain low-bit: dense mask + b-bit quantization
// Reconstruction is plain C++ with no contraction of multiply-adds, so every build and device that
// downloads a version gets the same bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/dtype.h"
#include "common/status.h"

namespace deltastore {

// Version 2 adds a tensor-wide quantization scale and the low-rank term; a chunk that uses neither is
// written as version 1, and both versions are read.
inline constexpr uint8_t kLossyFormatVersion = 2;
// The largest rank of the low-rank term (bounds the reconstruction's work at rows * cols * rank).
inline constexpr uint16_t kMaxLossyRank = 256;

enum class MaskKind : uint8_t { kDense = 0, kGroupK = 1, kBernoulli = 2, kPositions = 3 };
enum class ValueKind : uint8_t { kQuant = 0, kF16 = 1, kSign = 2 };

struct LossyParams {
  uint32_t rows = 0, cols = 0;
  float lambda = 0.0f;  // DBMS base shift: W_base + lambda * W_base
  float mu = 1.0f;      // DBMS scale of the compressed residual
  MaskKind mask = MaskKind::kDense;
  uint64_t seed = 0;
  uint32_t stream = 0;  // distinguishes tensors under one seed
  uint16_t group = 0;   // kGroupK: group size g along a row
  uint16_t keep = 0;    // kGroupK: kept per full group k
  float keep_prob = 1;  // kBernoulli
  ValueKind values = ValueKind::kQuant;
  uint8_t bits = 4;           // kQuant: code width (1..8)
  uint8_t planes = 1;         // kQuant: the codes are stored as this many bit planes, high bits first
  float sign_scale = 0;       // kSign
  bool shared_scale = false;  // kQuant: one scale and zero for the whole tensor instead of one per row
  uint16_t rank = 0;          // rank of the low-rank term L (0: none)
  uint8_t factor_bits = 0;    // L's factors: signed codes in [-(2^(bits-1) - 1), 2^(bits-1) - 1]
};

struct LossyTensor {
  LossyParams p;
  std::vector<uint32_t> positions;  // kPositions: kept flat indices, ascending
  std::vector<float> row_scale;     // kQuant: per row (stored as fp16)
  std::vector<float> row_zero;      // kQuant: per row (stored as fp16)
  std::vector<uint16_t> codes;      // per kept element in mask order: quant code, fp16 bits, or sign bit
  // Low-rank term L = A * B: A is rows x rank, B is rank x cols, both row-major signed codes; column k of
  // A is scaled by factor_scale_a[k], row k of B by factor_scale_b[k] (stored as fp16).
  std::vector<float> factor_scale_a, factor_scale_b;
  std::vector<int8_t> a_codes, b_codes;
};

// The dequantized factors of the low-rank term: A (rows x rank) and B (rank x cols), row-major.
void LowRankFactors(const LossyTensor& t, std::vector<float>* a, std::vector<float>* b);
// Adds L = A * B to `c` (rows x cols, row-major), each element summed over k = 0..rank-1 in order with
// every product rounded on its own, so that every build gives the same bits.
void AddLowRank(const LossyTensor& t, float* c);

// Calls fn(row, col) for every kept element, in mask order (rows ascending, columns ascending).
// For kPositions the positions come from `positions`.
void ForEachKept(const LossyParams& p, const std::vector<uint32_t>& positions,
                 const std::function<void(uint32_t row, uint32_t col)>& fn);
// The kept columns of one row (for kGroupK / kBernoulli / kDense), ascending.
void KeptColumns(const LossyParams& p, uint32_t row, std::vector<uint32_t>* cols);
// Number of kept elements in one full group and in the row's last, partial group.
uint32_t GroupKeep(const LossyParams& p, uint32_t group_len);
// The first `steps` steps of the k-of-g mask's partial Fisher-Yates shuffle of group `j` (of `len`
// columns) of `row`: on return (*slots)[i], for i < steps, is the column, from the group's start, that
// step i picked (docs/lossy_format.md, "Masks"). The mask keeps the first k; the encoder's search
// (gpu/lossy_select.cc) shuffles whole groups and keeps each element's step.
void ShuffleGroup(const LossyParams& p, uint32_t row, uint32_t j, uint32_t len, uint32_t steps,
                  std::vector<uint32_t>* slots);

// The value C holds at a kept element (before mu).
float DequantizeCode(const LossyTensor& t, uint32_t row, uint16_t code);

// Chunk encoding (codec id kLossy): the 12-byte chunk header, then the lossy header and sections.
std::string EncodeLossyChunk(DType dtype, const LossyTensor& tensor);
// The same bytes, with the tensor's codes released as soon as they are packed into planes, before zstd
// runs (a dense 4096 x 11008 candidate's 16-bit codes are 86 MiB).
std::string EncodeLossyChunkReleasingCodes(DType dtype, LossyTensor* tensor);
// Parses a lossy chunk without reconstructing (container inspection, tests).
StatusOr<LossyTensor> ParseLossyChunk(std::string_view encoded, DType* dtype);
// The value codes as stored: plane i holds bits [shifts[i], shifts[i] + widths[i]) of every code, packed
// LSB first at widths[i] bits a code, in mask order.
struct PackedCodes {
  std::vector<std::string> planes;
  std::vector<int> shifts, widths;
  uint64_t count = 0;
  // Codes [first, first + n) (first + n <= count) into out[0 .. n).
  void Unpack(uint64_t first, uint64_t n, uint16_t* out) const;
};
// EncodeLossyChunk's bytes from value codes given already packed (`codes`: the planes of the tensor's bits
// and planes, in that order, as PackedCodes describes them; the tensor's own `codes` are not read), each
// plane freed once compressed. A dense 8-bit candidate built a block of rows at a time writes its one
// plane as it goes and never holds 16-bit codes (86 MiB on a 4096 x 11008 tensor, beside the 43 MiB
// plane). Internal on planes that do not match the tensor's bits, planes or kept count.
StatusOr<std::string> EncodeLossyChunkPacked(DType dtype, const LossyTensor& tensor, PackedCodes codes);
// ParseLossyChunk with the codes left packed (the returned tensor's `codes` is empty), and where each row's
// codes start in mask order: row_start[r] (rows + 1 entries, the last is the kept count).
StatusOr<LossyTensor> ParseLossyChunkPacked(std::string_view encoded, DType* dtype, PackedCodes* codes,
                                            std::vector<uint64_t>* row_start);
// Reconstructs W into `out` (rows * cols elements of `dtype`) from the base tensor's bytes.
Status DecodeLossyChunk(std::string_view encoded, std::string_view base, std::string* out);

// Element conversions used by the lossy path (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
// Reads n elements of a float dtype (F32/F16/BF16) as float32; false for other dtypes.
bool ToFloat32(DType dtype, const char* data, size_t n, float* out);
bool FromFloat32(DType dtype, const float* in, size_t n, char* out);

}  // namespace deltastore
