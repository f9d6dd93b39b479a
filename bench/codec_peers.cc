// Lossless codecs side by side on the same bytes, one thread: zstd at several levels (library), the
// byte-plane + zstd-3 floor, and ours (EncodeChunk/DecodeChunk), for a base file alone ("base") and for a
// finetune against its base ("delta"). A benchmark: it prints figures and asserts nothing (it exits 1
// only when a codec fails to give back its input).
//
//   codec_peers BASE [FINETUNE] [--label NAME] [--reps N] [--levels 1,3,9] [--methods a,b] [--json FILE]
//
// Every method sees the same chunks: each tensor cut into kChunkSize (4 MiB) pieces, as the registry
// stores them. In the delta case zstd and the plane floor compress XOR(finetune, base) (a generic
// compressor's best use of the base); ours encodes the finetune with the base as context. Tensors of
// the finetune with no same-named, same-layout base tensor are encoded standalone by every method.
// Times: for each chunk the best of --reps runs of encode and of decode (the machine is shared, the
// best run is the one least disturbed), summed over the chunks; MB/s = raw bytes / that time (1 MB =
// 1e6 bytes). Decode output is compared with the input every time. The allocator has deltastored's
// settings (common/allocator.h): without them every 4 MiB chunk's buffers are mapped and zeroed afresh,
// which the server does not pay (faceres bf16 base encode: 550 against 670 MB/s).
// The base also gets its per-tensor order-0 entropy (bytes = sum over tensors of n * H(symbols), with
// 16-bit symbols for 2-byte dtypes, bytes for 1-byte dtypes, and the high and low 16-bit halves as two
// separate alphabets for 4-byte dtypes): a limit for any coder that models values independently.
#include <zstd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "codec/dtype.h"
#include "codec/safetensors.h"
#include "common/allocator.h"

using namespace deltastore;

namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string method;
  uint64_t raw = 0, stored = 0;
  double enc_s = 0, dec_s = 0;
  bool failed = false;
};

std::string ZstdEncode(std::string_view in, int level, ZSTD_CCtx* cctx) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_compressCCtx(cctx, out.data(), out.size(), in.data(), in.size(), level);
  if (ZSTD_isError(n)) return {};
  out.resize(n);
  return out;
}

bool ZstdDecode(std::string_view in, char* out, size_t raw, ZSTD_DCtx* dctx) {
  size_t n = ZSTD_decompressDCtx(dctx, out, raw, in.data(), in.size());
  return !ZSTD_isError(n) && n == raw;
}

void XorInto(std::string_view a, std::string_view b, std::string* out) {
  out->resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) (*out)[i] = static_cast<char>(a[i] ^ b[i]);
}

// A method encodes (raw, base-or-empty) and decodes back; Encode returns the stored bytes.
class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  virtual std::string Encode(DType dtype, std::string_view raw, std::string_view base) = 0;
  virtual bool Decode(DType dtype, std::string_view enc, std::string_view base, std::string* out,
                      size_t raw_size) = 0;
};

class ZstdMethod : public Method {
 public:
  explicit ZstdMethod(int level) : level_(level) {}
  ~ZstdMethod() override {
    ZSTD_freeCCtx(cctx_);
    ZSTD_freeDCtx(dctx_);
  }
  std::string name() const override { return "zstd-" + std::to_string(level_); }
  std::string Encode(DType, std::string_view raw, std::string_view base) override {
    if (base.empty()) return ZstdEncode(raw, level_, cctx_);
    XorInto(raw, base, &tmp_);
    return ZstdEncode(tmp_, level_, cctx_);
  }
  bool Decode(DType, std::string_view enc, std::string_view base, std::string* out, size_t raw) override {
    out->resize(raw);
    if (!ZstdDecode(enc, out->data(), raw, dctx_)) return false;
    for (size_t i = 0; i < base.size(); ++i) (*out)[i] = static_cast<char>((*out)[i] ^ base[i]);
    return true;
  }

 private:
  int level_;
  ZSTD_CCtx* cctx_ = ZSTD_createCCtx();
  ZSTD_DCtx* dctx_ = ZSTD_createDCtx();
  std::string tmp_;
};

// Byte planes (byte k of every word together), one zstd-3 frame per plane, after XOR with the base.
class PlanesMethod : public Method {
 public:
  ~PlanesMethod() override {
    ZSTD_freeCCtx(cctx_);
    ZSTD_freeDCtx(dctx_);
  }
  std::string name() const override { return "planes+zstd-3"; }
  std::string Encode(DType dtype, std::string_view raw, std::string_view base) override {
    std::string_view in = raw;
    if (!base.empty()) {
      XorInto(raw, base, &tmp_);
      in = tmp_;
    }
    size_t w = DTypeSize(dtype), n = in.size() / w;
    if (w == 1 || in.size() % w != 0) return ZstdEncode(in, 3, cctx_);
    std::string out;
    plane_.resize(n);
    for (size_t k = 0; k < w; ++k) {
      for (size_t i = 0; i < n; ++i) plane_[i] = in[i * w + k];
      std::string z = ZstdEncode(plane_, 3, cctx_);
      uint32_t len = static_cast<uint32_t>(z.size());
      out.append(reinterpret_cast<const char*>(&len), 4);
      out += z;
    }
    return out;
  }
  bool Decode(DType dtype, std::string_view enc, std::string_view base, std::string* out,
              size_t raw) override {
    out->resize(raw);
    size_t w = DTypeSize(dtype), n = raw / w;
    if (w == 1 || raw % w != 0) {
      if (!ZstdDecode(enc, out->data(), raw, dctx_)) return false;
    } else {
      plane_.resize(n);
      size_t pos = 0;
      for (size_t k = 0; k < w; ++k) {
        uint32_t len;
        if (pos + 4 > enc.size()) return false;
        std::memcpy(&len, enc.data() + pos, 4);
        pos += 4;
        if (pos + len > enc.size() || !ZstdDecode(enc.substr(pos, len), plane_.data(), n, dctx_))
          return false;
        pos += len;
        for (size_t i = 0; i < n; ++i) (*out)[i * w + k] = plane_[i];
      }
    }
    for (size_t i = 0; i < base.size(); ++i) (*out)[i] = static_cast<char>((*out)[i] ^ base[i]);
    return true;
  }

 private:
  ZSTD_CCtx* cctx_ = ZSTD_createCCtx();
  ZSTD_DCtx* dctx_ = ZSTD_createDCtx();
  std::string tmp_, plane_;
};

class OursMethod : public Method {
 public:
  explicit OursMethod(EncodeLevel level) : level_(level) {}
  std::string name() const override { return level_ == EncodeLevel::kFast ? "ours-fast" : "ours-max"; }
  std::string Encode(DType dtype, std::string_view raw, std::string_view base) override {
    EncodeOptions options;
    options.level = level_;
    return EncodeChunk(dtype, raw, base, options);
  }
  bool Decode(DType, std::string_view enc, std::string_view base, std::string* out, size_t raw) override {
    // As the reader streams whole chunks: decoded straight into a reused buffer (DecodeChunkInto), like the
    // zstd peers, not into a fresh zero-filled string per chunk.
    out->resize(raw);
    return DecodeChunkInto(enc, base, out->data(), raw).ok();
  }

 private:
  EncodeLevel level_;
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Order-0 entropy in bytes of one tensor's values (see the file comment for the alphabets).
double Order0Bytes(DType dtype, std::string_view bytes) {
  size_t w = DTypeSize(dtype);
  auto entropy = [](const std::vector<uint64_t>& hist, uint64_t n) {
    double bits = 0;
    for (uint64_t c : hist)
      if (c) bits -= double(c) * std::log2(double(c) / double(n));
    return bits / 8;
  };
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (w == 1 || bytes.size() % w != 0) {
    std::vector<uint64_t> h(256);
    for (size_t i = 0; i < bytes.size(); ++i) h[p[i]]++;
    return entropy(h, bytes.size());
  }
  if (w == 2 || w == 4) {
    size_t n = bytes.size() / w;
    double total = 0;
    for (size_t half = 0; half < w / 2; ++half) {
      std::vector<uint64_t> h(65536);
      for (size_t i = 0; i < n; ++i) h[p[i * w + 2 * half] | (p[i * w + 2 * half + 1] << 8)]++;
      total += entropy(h, n);
    }
    return total;
  }
  // 8-byte dtypes: byte planes.
  size_t n = bytes.size() / w;
  double total = 0;
  for (size_t k = 0; k < w; ++k) {
    std::vector<uint64_t> h(256);
    for (size_t i = 0; i < n; ++i) h[p[i * w + k]]++;
    total += entropy(h, n);
  }
  return total;
}

}  // namespace

// Over 100 lines on purpose: a benchmark script, one measured step after the other.
int main(int argc, char** argv) {
  UseServerAllocatorSettings();
  CLI::App app{"lossless codecs side by side on the same bytes, one thread"};
  std::string base_path, ft_path, label, json_path;
  int reps = 2;
  std::vector<int> levels = {1, 3, 9};
  std::vector<std::string> only;
  app.add_option("BASE", base_path)->required();
  app.add_option("FINETUNE", ft_path);
  app.add_option("--label", label, "input name in the output (default: the base file name)");
  app.add_option("--reps", reps, "timed runs per chunk, best kept")->check(CLI::PositiveNumber);
  app.add_option("--levels", levels, "zstd levels")->delimiter(',');
  app.add_option("--methods", only, "run only these methods (e.g. ours-fast, for a profiler)")
      ->delimiter(',');
  app.add_option("--json", json_path, "append one JSON object per row to this file");
  CLI11_PARSE(app, argc, argv);
  if (label.empty()) label = base_path.substr(base_path.find_last_of('/') + 1);

  auto base = SafetensorsFile::Open(base_path);
  if (!base.ok()) {
    std::fprintf(stderr, "%s: %s\n", base_path.c_str(), base.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<SafetensorsFile> ft;
  if (!ft_path.empty()) {
    auto f = SafetensorsFile::Open(ft_path);
    if (!f.ok()) {
      std::fprintf(stderr, "%s: %s\n", ft_path.c_str(), f.status().ToString().c_str());
      return 2;
    }
    ft = std::move(*f);
  }

  std::vector<std::unique_ptr<Method>> methods;
  methods.reserve(levels.size() + 3);
  for (int l : levels) methods.push_back(std::make_unique<ZstdMethod>(l));
  methods.push_back(std::make_unique<PlanesMethod>());
  methods.push_back(std::make_unique<OursMethod>(EncodeLevel::kMax));
  methods.push_back(std::make_unique<OursMethod>(EncodeLevel::kFast));
  if (!only.empty())
    std::erase_if(
        methods, [&](const auto& m) { return std::find(only.begin(), only.end(), m->name()) == only.end(); });

  std::FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  bool any_failed = false;
  std::printf("# %s, one thread, best of %d per chunk, MB = 1e6 bytes\n", label.c_str(), reps);
  std::printf("%-6s %-16s %14s %14s %8s %10s %10s\n", "case", "method", "raw B", "stored B", "ratio",
              "enc MB/s", "dec MB/s");

  for (int pass = 0; pass < (ft ? 2 : 1); ++pass) {
    const bool delta = pass == 1;
    const SafetensorsFile& file = delta ? *ft : **base;
    const char* case_name = delta ? "delta" : "base";
    std::vector<Row> rows(methods.size());
    for (size_t m = 0; m < methods.size(); ++m) rows[m].method = methods[m]->name();
    double entropy_bytes = 0;
    std::string raw, base_bytes, enc, dec;
    for (const auto& t : file.header().tensors) {
      const TensorInfo* bt = nullptr;
      if (delta) {
        bt = (*base)->header().Find(t.name);
        if (bt && (bt->dtype != t.dtype || bt->shape != t.shape)) bt = nullptr;
      }
      if (!delta) {
        std::string all(t.size(), '\0');
        (void)file.ReadTensorRange(t, 0, t.size(), all.data());
        entropy_bytes += Order0Bytes(t.dtype, all);
      }
      for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
        uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
        raw.resize(len);
        (void)file.ReadTensorRange(t, off, len, raw.data());
        std::string_view bview;
        if (bt) {
          base_bytes.resize(len);
          (void)(*base)->ReadTensorRange(*bt, off, len, base_bytes.data());
          bview = base_bytes;
        }
        for (size_t m = 0; m < methods.size(); ++m) {
          double best_e = 1e30, best_d = 1e30;
          for (int r = 0; r < reps; ++r) {
            auto t0 = Clock::now();
            enc = methods[m]->Encode(t.dtype, raw, bview);
            auto t1 = Clock::now();
            bool ok = methods[m]->Decode(t.dtype, enc, bview, &dec, len);
            auto t2 = Clock::now();
            best_e = std::min(best_e, Seconds(t0, t1));
            best_d = std::min(best_d, Seconds(t1, t2));
            if (!ok || dec != raw) rows[m].failed = true;
          }
          rows[m].raw += len;
          rows[m].stored += enc.size();
          rows[m].enc_s += best_e;
          rows[m].dec_s += best_d;
        }
      }
    }
    for (const Row& r : rows) {
      any_failed |= r.failed;
      std::printf("%-6s %-16s %14llu %14llu %7.3fx %10.1f %10.1f%s\n", case_name, r.method.c_str(),
                  (unsigned long long)r.raw, (unsigned long long)r.stored, double(r.raw) / double(r.stored),
                  r.raw / r.enc_s / 1e6, r.raw / r.dec_s / 1e6, r.failed ? "  ROUND TRIP FAILED" : "");
      if (json)
        std::fprintf(json,
                     "{\"input\":\"%s\",\"case\":\"%s\",\"method\":\"%s\",\"raw\":%llu,\"stored\":%llu,"
                     "\"enc_s\":%.6f,\"dec_s\":%.6f,\"ok\":%s}\n",
                     label.c_str(), case_name, r.method.c_str(), (unsigned long long)r.raw,
                     (unsigned long long)r.stored, r.enc_s, r.dec_s, r.failed ? "false" : "true");
    }
    if (!delta) {
      uint64_t raw_total = rows.empty() ? 0 : rows[0].raw;
      std::printf("%-6s %-16s %14llu %14.0f %7.3fx %10s %10s\n", case_name, "order0-entropy",
                  (unsigned long long)raw_total, entropy_bytes, double(raw_total) / entropy_bytes, "-", "-");
      if (json)
        std::fprintf(json,
                     "{\"input\":\"%s\",\"case\":\"base\",\"method\":\"order0-entropy\",\"raw\":%llu,"
                     "\"stored\":%.0f,\"ok\":true}\n",
                     label.c_str(), (unsigned long long)raw_total, entropy_bytes);
    }
    std::fflush(stdout);
  }
  if (json) std::fclose(json);
  return any_failed ? 1 : 0;
}
