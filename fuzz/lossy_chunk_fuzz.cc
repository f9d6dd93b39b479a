// Fuzzes ParseLossyChunk (the lossy delta format, codec id 0x10) and the reconstruction behind it.
//
// Input: the encoded chunk; byte 0 is forced to the lossy codec id. Chunks whose header claims more
// than kMaxRawSize raw bytes are skipped (readers bound it by the manifest's raw size). What parses
// must re-encode to a chunk that parses to the same tensor, and must reconstruct against a base of its
// size (made from the chunk's own bytes) when its dtype is a float one; the row decoder (downloads)
// accepts it too and gives the same bytes in two row ranges.
#include <cstring>

#include "codec/chunk_codec.h"
#include "codec/lossy_codec.h"
#include "codec/lossy_rows.h"
#include "fuzz/fuzz_util.h"

using namespace deltastore;
using deltastore::fuzz::kMaxRawSize;

namespace {

bool SameTensor(const LossyTensor& a, const LossyTensor& b) {
  const LossyParams &p = a.p, &q = b.p;
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  return p.rows == q.rows && p.cols == q.cols && bits(p.lambda) == bits(q.lambda) &&
         bits(p.mu) == bits(q.mu) && p.mask == q.mask && p.seed == q.seed && p.stream == q.stream &&
         p.group == q.group && p.keep == q.keep && bits(p.keep_prob) == bits(q.keep_prob) &&
         p.values == q.values && p.bits == q.bits && p.planes == q.planes &&
         bits(p.sign_scale) == bits(q.sign_scale) && a.positions == b.positions && a.codes == b.codes &&
         a.row_scale.size() == b.row_scale.size() && a.row_zero.size() == b.row_zero.size() &&
         p.shared_scale == q.shared_scale && p.rank == q.rank && p.factor_bits == q.factor_bits &&
         a.a_codes == b.a_codes && a.b_codes == b.b_codes &&
         a.factor_scale_a.size() == b.factor_scale_a.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 12) return 0;
  std::string chunk(reinterpret_cast<const char*>(data), size);
  chunk[0] = static_cast<char>(CodecId::kLossy);
  const uint64_t claimed = fuzz::LoadLE(data + 4, 8);
  if (claimed > kMaxRawSize) return 0;

  DType dtype{};
  auto t = ParseLossyChunk(chunk, &dtype);
  if (!t.ok()) {
    DS_FUZZ_CHECK(t.status().code() == StatusCode::kCorruption, "unexpected error code: %s",
                  t.status().ToString().c_str());
    return 0;
  }
  const LossyParams& p = t->p;
  const uint64_t numel = static_cast<uint64_t>(p.rows) * p.cols;
  DS_FUZZ_CHECK(DTypeSize(dtype) != 0 && numel <= claimed && numel * DTypeSize(dtype) == claimed,
                "shape %ux%u of dtype %d does not match the raw size %llu", p.rows, p.cols, (int)dtype,
                (unsigned long long)claimed);
  uint64_t kept = 0;
  ForEachKept(p, t->positions, [&](uint32_t r, uint32_t c) {
    DS_FUZZ_CHECK(r < p.rows && c < p.cols, "kept element (%u, %u) outside the tensor", r, c);
    ++kept;
  });
  DS_FUZZ_CHECK(kept == t->codes.size(), "%zu codes for %llu kept elements", t->codes.size(),
                (unsigned long long)kept);
  for (size_t i = 1; i < t->positions.size(); ++i) {
    DS_FUZZ_CHECK(t->positions[i - 1] < t->positions[i], "positions are not ascending");
  }
  if (p.values == ValueKind::kQuant) {
    DS_FUZZ_CHECK(t->row_scale.size() == p.rows && t->row_zero.size() == p.rows, "row scales missing");
    for (uint16_t c : t->codes) DS_FUZZ_CHECK(c < (1u << p.bits), "code %u wider than %d bits", c, p.bits);
  }

  // Re-encode: parse(encode(t)) == t (scales go through fp16 again, so only their count is compared).
  if (numel <= (64u << 10)) {
    std::string again = EncodeLossyChunk(dtype, *t);
    DType dtype2{};
    auto t2 = ParseLossyChunk(again, &dtype2);
    DS_FUZZ_CHECK(t2.ok(), "re-encoded lossy chunk does not parse: %s", t2.status().ToString().c_str());
    DS_FUZZ_CHECK(dtype2 == dtype && SameTensor(*t, *t2), "re-encoded lossy chunk parses differently");
  }

  // Reconstruction against a base of the right size, through the chunk decoder as readers call it.
  std::string base = fuzz::Cyclic(std::string_view(chunk).substr(12), claimed);
  auto out = DecodeChunk(chunk, base, claimed);
  if (out.ok()) {
    DS_FUZZ_CHECK(out->size() == claimed, "reconstructed %zu bytes, expected %llu", out->size(),
                  (unsigned long long)claimed);
  } else {
    DS_FUZZ_CHECK(fuzz::IsOneOf(out.status(), {StatusCode::kCorruption, StatusCode::kInvalidArgument}),
                  "unexpected error code: %s", out.status().ToString().c_str());
  }
  auto by_rows = LossyRowDecoder::Parse(chunk);
  DS_FUZZ_CHECK(by_rows.ok(), "the row decoder rejects a chunk the parser accepts: %s",
                by_rows.status().ToString().c_str());
  if (out.ok()) {
    const uint64_t row = (*by_rows)->row_bytes();
    const uint32_t mid = p.rows / 2;
    std::string split(claimed, '\0');
    Status first = (*by_rows)->DecodeRows(0, mid, std::string_view(base).substr(0, mid * row), split.data());
    Status second = (*by_rows)->DecodeRows(mid, p.rows, std::string_view(base).substr(mid * row),
                                           split.data() + mid * row);
    DS_FUZZ_CHECK(first.ok() && second.ok() && split == *out,
                  "row-range decode differs from the whole decode");
  }
  auto wrong = DecodeChunk(chunk, std::string_view(base).substr(0, base.size() / 2), claimed);
  DS_FUZZ_CHECK(claimed == 0 || !wrong.ok(), "lossy chunk decoded against a base of the wrong size");
  return 0;
}
