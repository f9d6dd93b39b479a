#include "codec/lossy_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>

#include "codec/bit_pack.h"
#include "codec/chunk_codec.h"
#include "codec/philox.h"
#include "codec/scaled_rows.h"
#include "common/endian.h"

namespace deltastore {
namespace {

void PutF32(std::string* out, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  PutLE(out, u, 4);
}

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool Get(uint64_t* v, int bytes) {
    if (s_.size() < static_cast<size_t>(bytes)) return false;
    *v = 0;
    for (int i = bytes - 1; i >= 0; --i) *v = (*v << 8) | static_cast<uint8_t>(s_[i]);
    s_.remove_prefix(bytes);
    return true;
  }
  bool GetF32(float* f) {
    uint64_t u;
    if (!Get(&u, 4)) return false;
    uint32_t u32 = static_cast<uint32_t>(u);
    std::memcpy(f, &u32, 4);
    return true;
  }
  bool Take(size_t n, std::string_view* out) {
    if (s_.size() < n) return false;
    *out = s_.substr(0, n);
    s_.remove_prefix(n);
    return true;
  }
  bool empty() const { return s_.empty(); }

 private:
  std::string_view s_;
};

// zstd's fast strategy (level 1) with matches of 7 bytes or more. The codes are nearly random: what zstd
// gains on them is its entropy coding of literals, and shorter matches cost more in literals than they
// save. On minilm at 16x (every candidate of the probes and searches) this wrote 0.26% more bytes than
// level 9 in a tenth of the time (1.8 s against 18.7 s of a 70 s job's CPU); level 3 wrote 1.6% more.
constexpr int kSectionLevel = 1, kSectionMinMatch = 7;

std::string Zstd(std::string_view in) {
  struct FreeCCtx {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };
  thread_local const std::unique_ptr<ZSTD_CCtx, FreeCCtx> cctx = [] {
    std::unique_ptr<ZSTD_CCtx, FreeCCtx> c(ZSTD_createCCtx());
    ZSTD_CCtx_setParameter(c.get(), ZSTD_c_compressionLevel, kSectionLevel);
    ZSTD_CCtx_setParameter(c.get(), ZSTD_c_minMatch, kSectionMinMatch);
    return c;
  }();
  // Into a buffer of the bound that is not written beforehand (a string's would be zero-filled: a dense
  // 8-bit plane's 43 MiB bound all resident where zstd wrote 15), then copied at its size.
  const size_t bound = ZSTD_compressBound(in.size());
  std::unique_ptr<char[]> buf(new char[bound]);
  size_t n = ZSTD_compress2(cctx.get(), buf.get(), bound, in.data(), in.size());
  return ZSTD_isError(n) ? std::string() : std::string(buf.get(), n);
}

Status Unzstd(std::string_view in, size_t expected, std::string* out) {
  unsigned long long size = ZSTD_getFrameContentSize(in.data(), in.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size != expected) {
    return Corruption("lossy section has a wrong size");
  }
  out->resize(expected);
  size_t n = ZSTD_decompress(out->data(), expected, in.data(), in.size());
  if (ZSTD_isError(n) || n != expected) return Corruption("lossy section does not decompress");
  return OkStatus();
}

void AppendSection(std::string* out, std::string_view raw) {
  std::string z = Zstd(raw);
  PutLE(out, raw.size(), 8);
  PutLE(out, z.size(), 8);
  out->append(z);
}

Status ReadSection(Reader* r, uint64_t max_raw, std::string* out) {
  uint64_t raw = 0, z = 0;
  std::string_view frame;
  if (!r->Get(&raw, 8) || !r->Get(&z, 8) || !r->Take(z, &frame))
    return Corruption("lossy chunk is truncated");
  if (raw > max_raw) return Corruption("lossy section is larger than the tensor allows");
  return Unzstd(frame, raw, out);
}

// Widths of the bit planes for `bits` split into `planes` parts, high bits first.
std::vector<int> PlaneWidths(int bits, int planes) {
  std::vector<int> w;
  int left = bits;
  for (int i = 0; i < planes; ++i) {
    int n = (left + (planes - i) - 1) / (planes - i);
    w.push_back(n);
    left -= n;
  }
  return w;
}

// Bits of a value code, and the planes they are stored in.
int ValueBits(const LossyParams& p) {
  return p.values == ValueKind::kQuant ? p.bits : p.values == ValueKind::kF16 ? 16 : 1;
}
int ValuePlanes(const LossyParams& p) {
  return p.values == ValueKind::kQuant ? p.planes : p.values == ValueKind::kF16 ? 2 : 1;
}

std::string PackBits(const std::vector<uint16_t>& codes, int shift, int width) {
  std::string out(PackedBytes(codes.size(), width), '\0');
  PackPlane(codes.data(), codes.size(), shift, width, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

// row_start[r] = the kept elements before row r (rows + 1 entries); returns the kept count. Group and
// dense masks keep a fixed count per row, so only Bernoulli masks draw their bits here.
uint64_t RowStarts(const LossyParams& p, const std::vector<uint32_t>& positions,
                   std::vector<uint64_t>* row_start) {
  row_start->assign(static_cast<size_t>(p.rows) + 1, 0);
  uint64_t per_row = 0;
  if (p.mask == MaskKind::kDense) per_row = p.cols;
  if (p.mask == MaskKind::kGroupK) {
    for (uint32_t start = 0; start < p.cols; start += p.group)
      per_row += GroupKeep(p, std::min<uint32_t>(p.group, p.cols - start));
  }
  std::vector<uint32_t> cols;
  size_t at = 0;  // kPositions: the next position
  for (uint32_t r = 0; r < p.rows; ++r) {
    uint64_t n = per_row;
    if (p.mask == MaskKind::kBernoulli) {
      KeptColumns(p, r, &cols);
      n = cols.size();
    } else if (p.mask == MaskKind::kPositions) {
      const uint64_t end = (static_cast<uint64_t>(r) + 1) * p.cols;
      const size_t first = at;
      while (at < positions.size() && positions[at] < end) ++at;
      n = at - first;
    }
    (*row_start)[r + 1] = (*row_start)[r] + n;
  }
  return row_start->back();
}

}  // namespace

void PackedCodes::Unpack(uint64_t first, uint64_t n, uint16_t* out) const {
  std::fill(out, out + n, uint16_t{0});
  for (size_t p = 0; p < planes.size(); ++p) {
    UnpackPlaneOr(reinterpret_cast<const uint8_t*>(planes[p].data()), first, n, shifts[p], widths[p], out);
  }
}

// ---------------------------------------------------------------------------------------------------
// Masks

uint32_t GroupKeep(const LossyParams& p, uint32_t group_len) {
  if (group_len == p.group) return p.keep;
  // The last group of a row may be shorter: keep the same share, at least one.
  uint32_t k = static_cast<uint32_t>((static_cast<uint64_t>(p.keep) * group_len + p.group / 2) / p.group);
  return std::clamp<uint32_t>(k, 1, group_len);
}

void ShuffleGroup(const LossyParams& p, uint32_t row, uint32_t j, uint32_t len, uint32_t steps,
                  std::vector<uint32_t>* slots) {
  // Step i swaps slot i with slot i + (u_i mod (len - i)), where u_0, u_1, ... are the words of blocks
  // {id lo, id hi, stream, draw} for draw = 0, 1, ... (4 words per block), id = row * ceil(cols / g) + j.
  const uint64_t id = static_cast<uint64_t>(row) * ((p.cols + p.group - 1) / p.group) + j;
  slots->resize(len);
  std::iota(slots->begin(), slots->end(), 0u);
  PhiloxBlock r{};
  for (uint32_t i = 0; i < steps; ++i) {
    if (i % 4 == 0) {
      r = Philox4x32({static_cast<uint32_t>(id), static_cast<uint32_t>(id >> 32), p.stream, i / 4}, p.seed);
    }
    uint32_t pick = i + r[i % 4] % (len - i);
    std::swap((*slots)[i], (*slots)[pick]);
  }
}

void KeptColumns(const LossyParams& p, uint32_t row, std::vector<uint32_t>* cols) {
  cols->clear();
  switch (p.mask) {
    case MaskKind::kDense:
      cols->resize(p.cols);
      std::iota(cols->begin(), cols->end(), 0u);
      return;
    case MaskKind::kBernoulli: {
      // Element i = row * cols + col draws lane i % 4 of block i / 4 under counter {block lo, block hi,
      // stream, 0x42455201}; it is kept when that word is below keep_prob * 2^32.
      uint64_t threshold = static_cast<uint64_t>(std::ldexp(static_cast<double>(p.keep_prob), 32));
      uint64_t first = static_cast<uint64_t>(row) * p.cols, last = first + p.cols;
      for (uint64_t i = first; i < last;) {
        uint64_t block = i / 4;
        PhiloxBlock r = Philox4x32(
            {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), p.stream, 0x42455201u},
            p.seed);
        for (uint64_t lane = i % 4; lane < 4 && i < last; ++lane, ++i) {
          if (r[lane] < threshold) cols->push_back(static_cast<uint32_t>(i - first));
        }
      }
      return;
    }
    case MaskKind::kGroupK: {
      // Group j of the row keeps the k of its positions that the first k steps of its shuffle pick.
      uint32_t ngroups = (p.cols + p.group - 1) / p.group;
      std::vector<uint32_t> slots;
      for (uint32_t j = 0; j < ngroups; ++j) {
        uint32_t start = j * p.group, len = std::min<uint32_t>(p.group, p.cols - start);
        uint32_t k = GroupKeep(p, len);
        ShuffleGroup(p, row, j, len, k, &slots);
        std::sort(slots.begin(), slots.begin() + k);
        for (uint32_t i = 0; i < k; ++i) cols->push_back(start + slots[i]);
      }
      return;
    }
    case MaskKind::kPositions: return;  // stored explicitly
  }
}

void ForEachKept(const LossyParams& p, const std::vector<uint32_t>& positions,
                 const std::function<void(uint32_t, uint32_t)>& fn) {
  if (p.mask == MaskKind::kPositions) {
    for (uint32_t pos : positions) fn(pos / p.cols, pos % p.cols);
    return;
  }
  std::vector<uint32_t> cols;
  for (uint32_t r = 0; r < p.rows; ++r) {
    KeptColumns(p, r, &cols);
    for (uint32_t c : cols) fn(r, c);
  }
}

float DequantizeCode(const LossyTensor& t, uint32_t row, uint16_t code) {
  switch (t.p.values) {
    case ValueKind::kQuant: {
      volatile float scaled = t.row_scale[row] * static_cast<float>(code);  // no fused multiply-add
      return t.row_zero[row] + scaled;
    }
    case ValueKind::kF16: return HalfToFloat(code);
    case ValueKind::kSign: return code ? t.p.sign_scale : -t.p.sign_scale;
  }
  return 0.0f;
}

void LowRankFactors(const LossyTensor& t, std::vector<float>* a, std::vector<float>* b) {
  const LossyParams& p = t.p;
  a->resize(static_cast<size_t>(p.rows) * p.rank);
  b->resize(static_cast<size_t>(p.rank) * p.cols);
  for (size_t i = 0; i < a->size(); ++i) (*a)[i] = t.factor_scale_a[i % p.rank] * t.a_codes[i];
  for (size_t i = 0; i < b->size(); ++i) (*b)[i] = t.factor_scale_b[i / p.cols] * t.b_codes[i];
}

// Each row's L = A B as SumScaledRows sums it (the same bits as LossyRowDecoder), then added to C.
void AddLowRank(const LossyTensor& t, float* c) {
  const LossyParams& p = t.p;
  if (p.rank == 0) return;
  std::vector<float> a, b, sum(p.cols);
  LowRankFactors(t, &a, &b);
  for (uint32_t i = 0; i < p.rows; ++i) {
    SumScaledRows(a.data() + static_cast<size_t>(i) * p.rank, nullptr, p.rank, b.data(), p.cols, sum.data());
    float* row = c + static_cast<size_t>(i) * p.cols;
    for (uint32_t j = 0; j < p.cols; ++j) row[j] += sum[j];
  }
}

// ---------------------------------------------------------------------------------------------------
// Encoding

namespace {

// EncodeLossyChunk; with `release` (t's own codes), the codes are freed once packed; with `packed`, the
// value planes are taken from there (t's codes are not read).
std::string Encode(DType dtype, const LossyTensor& t, std::vector<uint16_t>* release, PackedCodes* packed) {
  const LossyParams& p = t.p;
  std::string out = ChunkHeader(CodecId::kLossy, kChunkFlagDelta, dtype,
                                static_cast<uint64_t>(p.rows) * p.cols * DTypeSize(dtype));
  const bool v2 = p.shared_scale || p.rank > 0;
  out.push_back(static_cast<char>(v2 ? 2 : 1));
  PutLE(&out, p.rows, 4);
  PutLE(&out, p.cols, 4);
  PutF32(&out, p.lambda);
  PutF32(&out, p.mu);
  out.push_back(static_cast<char>(p.mask));
  PutLE(&out, p.seed, 8);
  PutLE(&out, p.stream, 4);
  PutLE(&out, p.group, 2);
  PutLE(&out, p.keep, 2);
  PutF32(&out, p.keep_prob);
  out.push_back(static_cast<char>(p.values));
  out.push_back(static_cast<char>(p.bits));
  out.push_back(static_cast<char>(p.planes));
  PutF32(&out, p.sign_scale);
  if (v2) {
    out.push_back(static_cast<char>(p.shared_scale ? 1 : 0));
    PutLE(&out, p.rank, 2);
    out.push_back(static_cast<char>(p.factor_bits));
  }
  if (p.mask == MaskKind::kPositions) {
    std::string gaps;
    uint32_t prev = 0;
    for (size_t i = 0; i < t.positions.size(); ++i) {
      uint32_t gap = t.positions[i] - (i == 0 ? 0 : prev + 1);
      prev = t.positions[i];
      while (gap >= 0x80) {
        gaps.push_back(static_cast<char>((gap & 0x7f) | 0x80));
        gap >>= 7;
      }
      gaps.push_back(static_cast<char>(gap));
    }
    PutLE(&out, t.positions.size(), 8);
    AppendSection(&out, gaps);
  }
  // Version 1 zstd-codes each piece as a section of its own; version 2 concatenates them into one
  // section (their sizes follow from the header), which saves ~25 bytes a piece on small tensors.
  std::vector<std::string> pieces;
  if (p.values == ValueKind::kQuant) {
    std::string scales;
    for (uint32_t r = 0; r < (p.shared_scale ? 1 : p.rows); ++r) {
      PutLE(&scales, FloatToHalf(t.row_scale[r]), 2);
      PutLE(&scales, FloatToHalf(t.row_zero[r]), 2);
    }
    pieces.push_back(std::move(scales));
  }
  int shift = ValueBits(p);
  const std::vector<int> widths = PlaneWidths(ValueBits(p), ValuePlanes(p));
  for (size_t i = 0; i < widths.size(); ++i) {
    shift -= widths[i];
    pieces.push_back(packed != nullptr ? std::move(packed->planes[i]) : PackBits(t.codes, shift, widths[i]));
  }
  if (release != nullptr) std::vector<uint16_t>().swap(*release);
  if (p.rank > 0) {
    std::string scales;
    for (uint32_t k = 0; k < p.rank; ++k) {
      PutLE(&scales, FloatToHalf(t.factor_scale_a[k]), 2);
      PutLE(&scales, FloatToHalf(t.factor_scale_b[k]), 2);
    }
    pieces.push_back(std::move(scales));
    pieces.emplace_back(reinterpret_cast<const char*>(t.a_codes.data()), t.a_codes.size());
    pieces.emplace_back(reinterpret_cast<const char*>(t.b_codes.data()), t.b_codes.size());
  }
  if (v2) {
    std::string body;
    size_t size = 0;
    for (const auto& piece : pieces) size += piece.size();
    body.reserve(size);
    for (auto& piece : pieces) body += std::exchange(piece, std::string());  // each freed once copied
    AppendSection(&out, body);
  } else {
    for (auto& piece : pieces)
      AppendSection(&out, std::exchange(piece, std::string()));  // each freed once coded
  }
  return out;
}

}  // namespace

std::string EncodeLossyChunk(DType dtype, const LossyTensor& t) {
  return Encode(dtype, t, nullptr, nullptr);
}

std::string EncodeLossyChunkReleasingCodes(DType dtype, LossyTensor* t) {
  return Encode(dtype, *t, &t->codes, nullptr);
}

StatusOr<std::string> EncodeLossyChunkPacked(DType dtype, const LossyTensor& t, PackedCodes codes) {
  std::vector<uint64_t> row_start;
  const uint64_t kept = RowStarts(t.p, t.positions, &row_start);
  int shift = ValueBits(t.p);
  const std::vector<int> widths = PlaneWidths(ValueBits(t.p), ValuePlanes(t.p));
  bool match = codes.count == kept && codes.planes.size() == widths.size() &&
               codes.widths.size() == widths.size() && codes.shifts.size() == widths.size();
  for (size_t i = 0; match && i < widths.size(); ++i) {
    shift -= widths[i];
    match = codes.widths[i] == widths[i] && codes.shifts[i] == shift &&
            codes.planes[i].size() == PackedBytes(kept, widths[i]);
  }
  if (!match) return Internal("lossy chunk: the packed codes do not match the tensor's planes or kept count");
  return Encode(dtype, t, nullptr, &codes);
}

namespace {

// Stage 1 of ParseLossyChunk: the fixed header after the chunk prefix; returns the format version.
StatusOr<uint64_t> ParseLossyHeader(Reader* r, LossyParams* p) {
  uint64_t v = 0;
  auto get = [&](int bytes) -> bool { return r->Get(&v, bytes); };
  if (!get(1) || v < 1 || v > kLossyFormatVersion)
    return Corruption("lossy chunk format version is not supported");
  const uint64_t version = v;
  if (!get(4)) return Corruption("lossy chunk is truncated");
  p->rows = static_cast<uint32_t>(v);
  if (!get(4)) return Corruption("lossy chunk is truncated");
  p->cols = static_cast<uint32_t>(v);
  if (!r->GetF32(&p->lambda) || !r->GetF32(&p->mu) || !get(1)) return Corruption("lossy chunk is truncated");
  if (v > 3) return Corruption("unknown lossy mask kind");
  p->mask = static_cast<MaskKind>(v);
  if (!get(8)) return Corruption("lossy chunk is truncated");
  p->seed = v;
  if (!get(4)) return Corruption("lossy chunk is truncated");
  p->stream = static_cast<uint32_t>(v);
  if (!get(2)) return Corruption("lossy chunk is truncated");
  p->group = static_cast<uint16_t>(v);
  if (!get(2)) return Corruption("lossy chunk is truncated");
  p->keep = static_cast<uint16_t>(v);
  if (!r->GetF32(&p->keep_prob) || !get(1)) return Corruption("lossy chunk is truncated");
  if (v > 2) return Corruption("unknown lossy value kind");
  p->values = static_cast<ValueKind>(v);
  if (!get(1)) return Corruption("lossy chunk is truncated");
  p->bits = static_cast<uint8_t>(v);
  if (!get(1)) return Corruption("lossy chunk is truncated");
  p->planes = static_cast<uint8_t>(v);
  if (!r->GetF32(&p->sign_scale)) return Corruption("lossy chunk is truncated");
  if (version >= 2) {
    if (!get(1) || v > 1) return Corruption("lossy chunk has a bad scale mode");
    p->shared_scale = v == 1;
    if (!get(2)) return Corruption("lossy chunk is truncated");
    p->rank = static_cast<uint16_t>(v);
    if (!get(1)) return Corruption("lossy chunk is truncated");
    p->factor_bits = static_cast<uint8_t>(v);
  }
  return version;
}

// Stage 2: the header's parameters against each other and against the chunk's raw size (from the
// prefix), so that the work of the stages after it is bounded by that size.
Status CheckLossyParams(const LossyParams& p, uint64_t raw_size, DType dtype) {
  const uint64_t numel = static_cast<uint64_t>(p.rows) * p.cols;
  // Checked without wrap-around, and never with a zero element size: the work below is bounded by
  // the raw size the caller checked against its manifest.
  const uint64_t element = DTypeSize(dtype);
  if (element == 0) return Corruption("lossy chunk has an unknown dtype");
  if (numel > raw_size / element || numel * element != raw_size) {
    return Corruption("lossy chunk shape does not match its size");
  }
  // No lossy tensor is empty (min_elements >= 1); an empty one with 2^32 - 1 rows would walk them all.
  if (numel == 0) return Corruption("lossy chunk has an empty shape");
  if (p.mask == MaskKind::kGroupK && (p.group == 0 || p.keep == 0 || p.keep > p.group)) {
    return Corruption("lossy chunk has a bad group size");
  }
  if (p.mask == MaskKind::kBernoulli && !(p.keep_prob > 0.0f && p.keep_prob <= 1.0f)) {
    return Corruption("lossy chunk has a bad keep probability");
  }
  if (p.values == ValueKind::kQuant && (p.bits < 1 || p.bits > 8 || p.planes < 1 || p.planes > p.bits)) {
    return Corruption("lossy chunk has bad quantization parameters");
  }
  if (!std::isfinite(p.lambda) || !std::isfinite(p.mu))
    return Corruption("lossy chunk has non-finite scalars");
  if (p.rank > 0 && (p.rank > kMaxLossyRank || p.rank > std::min(p.rows, p.cols) || p.factor_bits < 2 ||
                     p.factor_bits > 8)) {
    return Corruption("lossy chunk has a bad low-rank term");
  }
  // Writers put 0 there without a term; anything else would not survive a re-encode (as version 1).
  if (p.rank == 0 && p.factor_bits != 0)
    return Corruption("lossy chunk has factor bits without a low-rank term");
  return OkStatus();
}

// Stage 3 (kPositions masks): the kept positions, LEB128 gaps in one section.
Status ParseLossyPositions(Reader* r, uint64_t numel, std::vector<uint32_t>* positions) {
  std::string buf;
  uint64_t count = 0;
  if (!r->Get(&count, 8) || count > numel) return Corruption("lossy chunk has a bad position count");
  DS_RETURN_IF_ERROR(ReadSection(r, count * 5, &buf));
  size_t i = 0;
  uint64_t prev = 0;
  for (uint64_t n = 0; n < count; ++n) {
    uint64_t gap = 0;
    int shift = 0;
    while (true) {
      if (i >= buf.size() || shift > 28) return Corruption("lossy positions are malformed");
      uint8_t b = static_cast<uint8_t>(buf[i++]);
      gap |= static_cast<uint64_t>(b & 0x7f) << shift;
      shift += 7;
      if (!(b & 0x80)) break;
    }
    uint64_t pos = (n == 0 ? 0 : prev + 1) + gap;
    if (pos >= numel) return Corruption("lossy position outside the tensor");
    positions->push_back(static_cast<uint32_t>(pos));
    prev = pos;
  }
  return OkStatus();
}

// The pieces after the positions, in order: sizes from the header (one section each in version 1,
// one section for all in version 2).
class LossyBody {
 public:
  LossyBody(Reader* r, uint64_t version, const LossyParams& p, uint64_t kept) : r_(r), version_(version) {
    const uint32_t pairs = p.shared_scale ? 1 : p.rows;
    if (p.values == ValueKind::kQuant) sizes_.push_back(static_cast<uint64_t>(pairs) * 4);
    for (int w : PlaneWidths(ValueBits(p), ValuePlanes(p))) sizes_.push_back(PackedBytes(kept, w));
    if (p.rank > 0) {
      sizes_.push_back(static_cast<uint64_t>(p.rank) * 4);
      sizes_.push_back(static_cast<uint64_t>(p.rows) * p.rank);
      sizes_.push_back(static_cast<uint64_t>(p.rank) * p.cols);
    }
  }
  // Version 2: reads the one section of the whole body.
  Status Start() {
    if (version_ < 2) return OkStatus();
    const uint64_t total = std::accumulate(sizes_.begin(), sizes_.end(), uint64_t{0});
    DS_RETURN_IF_ERROR(ReadSection(r_, total, &body_));
    if (body_.size() != total) return Corruption("lossy body has a wrong size");
    return OkStatus();
  }
  Status Next(std::string* out) {
    const uint64_t size = sizes_[next_++];
    if (version_ >= 2) {
      out->assign(body_, body_at_, size);
      body_at_ += size;
      return OkStatus();
    }
    DS_RETURN_IF_ERROR(ReadSection(r_, size, out));
    if (out->size() != size) return Corruption("lossy section has a wrong size");
    return OkStatus();
  }

 private:
  Reader* r_;
  uint64_t version_;
  std::vector<uint64_t> sizes_;
  std::string body_;
  size_t body_at_ = 0;
  size_t next_ = 0;
};

// Stage 4: per-row (or shared) scales and zero points, then the value codes' planes (left packed).
Status ParseLossyValues(LossyBody* body, uint64_t kept, LossyTensor* t, PackedCodes* codes) {
  const LossyParams& p = t->p;
  std::string buf;
  if (p.values == ValueKind::kQuant) {
    DS_RETURN_IF_ERROR(body->Next(&buf));
    t->row_scale.resize(p.rows);
    t->row_zero.resize(p.rows);
    for (uint32_t i = 0; i < p.rows; ++i) {
      const size_t at = p.shared_scale ? 0 : 4 * static_cast<size_t>(i);
      uint16_t s, z;
      std::memcpy(&s, buf.data() + at, 2);
      std::memcpy(&z, buf.data() + at + 2, 2);
      t->row_scale[i] = HalfToFloat(s);
      t->row_zero[i] = HalfToFloat(z);
    }
  }
  codes->count = kept;
  int shift = ValueBits(p);
  for (int w : PlaneWidths(ValueBits(p), ValuePlanes(p))) {
    shift -= w;
    codes->planes.emplace_back();
    DS_RETURN_IF_ERROR(body->Next(&codes->planes.back()));
    codes->shifts.push_back(shift);
    codes->widths.push_back(w);
  }
  return OkStatus();
}

// Stage 5 (rank > 0): the low-rank term's factor scales and int8 codes.
Status ParseLossyFactors(LossyBody* body, LossyTensor* t) {
  const LossyParams& p = t->p;
  std::string buf;
  DS_RETURN_IF_ERROR(body->Next(&buf));
  for (uint32_t k = 0; k < p.rank; ++k) {
    uint16_t a, b;
    std::memcpy(&a, buf.data() + size_t{4} * k, 2);
    std::memcpy(&b, buf.data() + size_t{4} * k + 2, 2);
    t->factor_scale_a.push_back(HalfToFloat(a));
    t->factor_scale_b.push_back(HalfToFloat(b));
    if (!std::isfinite(t->factor_scale_a.back()) || !std::isfinite(t->factor_scale_b.back()))
      return Corruption("lossy factor scales are not finite");
  }
  const int limit = (1 << (p.factor_bits - 1)) - 1;
  for (auto* codes : {&t->a_codes, &t->b_codes}) {
    DS_RETURN_IF_ERROR(body->Next(&buf));
    codes->resize(buf.size());
    std::memcpy(codes->data(), buf.data(), buf.size());
    for (int8_t c : *codes) {
      if (c < -limit || c > limit) return Corruption("lossy factor code out of range");
    }
  }
  return OkStatus();
}

}  // namespace

StatusOr<LossyTensor> ParseLossyChunkPacked(std::string_view encoded, DType* dtype, PackedCodes* codes,
                                            std::vector<uint64_t>* row_start) {
  if (encoded.size() < 12 || static_cast<CodecId>(encoded[0]) != CodecId::kLossy) {
    return Corruption("not a lossy chunk");
  }
  *dtype = static_cast<DType>(encoded[3]);
  Reader r(encoded.substr(12));
  LossyTensor t;
  DS_ASSIGN_OR_RETURN(const uint64_t version, ParseLossyHeader(&r, &t.p));
  uint64_t raw_size = 0;
  for (int i = 7; i >= 0; --i) raw_size = (raw_size << 8) | static_cast<uint8_t>(encoded[4 + i]);
  DS_RETURN_IF_ERROR(CheckLossyParams(t.p, raw_size, *dtype));
  const uint64_t numel = static_cast<uint64_t>(t.p.rows) * t.p.cols;
  if (t.p.mask == MaskKind::kPositions) DS_RETURN_IF_ERROR(ParseLossyPositions(&r, numel, &t.positions));
  *codes = PackedCodes();
  const uint64_t kept = RowStarts(t.p, t.positions, row_start);
  LossyBody body(&r, version, t.p, kept);
  DS_RETURN_IF_ERROR(body.Start());
  DS_RETURN_IF_ERROR(ParseLossyValues(&body, kept, &t, codes));
  if (t.p.rank > 0) DS_RETURN_IF_ERROR(ParseLossyFactors(&body, &t));
  if (!r.empty()) return Corruption("lossy chunk has trailing bytes");
  return t;
}

StatusOr<LossyTensor> ParseLossyChunk(std::string_view encoded, DType* dtype) {
  PackedCodes packed;
  std::vector<uint64_t> row_start;
  DS_ASSIGN_OR_RETURN(LossyTensor t, ParseLossyChunkPacked(encoded, dtype, &packed, &row_start));
  t.codes.resize(packed.count);
  packed.Unpack(0, packed.count, t.codes.data());
  return t;
}

Status DecodeLossyChunk(std::string_view encoded, std::string_view base, std::string* out) {
  DType dtype;
  DS_ASSIGN_OR_RETURN(LossyTensor t, ParseLossyChunk(encoded, &dtype));
  const uint64_t numel = static_cast<uint64_t>(t.p.rows) * t.p.cols;
  if (base.size() != numel * DTypeSize(dtype))
    return InvalidArgument("lossy chunk needs base bytes of its size");
  std::vector<float> w(numel), c(numel, 0.0f);
  if (!ToFloat32(dtype, base.data(), numel, w.data())) return Corruption("lossy chunk on a non-float dtype");
  size_t i = 0;
  ForEachKept(t.p, t.positions, [&](uint32_t row, uint32_t col) {
    c[static_cast<uint64_t>(row) * t.p.cols + col] = DequantizeCode(t, row, t.codes[i++]);
  });
  AddLowRank(t, c.data());
  const float shift = 1.0f + t.p.lambda, mu = t.p.mu;
  for (uint64_t j = 0; j < numel; ++j) {
    volatile float a = shift * w[j];  // volatile: no fused multiply-add, same bits on every build
    volatile float b = mu * c[j];
    w[j] = a + b;
  }
  out->resize(numel * DTypeSize(dtype));
  FromFloat32(dtype, w.data(), numel, out->data());
  return OkStatus();
}

}  // namespace deltastore
