// Lossy methods side by side on one base/finetune pair of safetensors files (weight and output error),
// every 2-D float weight compressed at each ratio; prints one table. Errors are global:
// sqrt(sum ||err||^2 / sum ||delta||^2) over the lossy tensors; ratio = their delta bytes in their own
// dtype / stored bytes (chunks with all their headers).
//   lossy_pair BASE FINETUNE [--ratios 8,16,32,64,128] [--methods deltadq,...]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "codec/lossy_codec.h"
#include "codec/safetensors.h"
#include "gpu/device.h"
#include "gpu/lossy.h"

using namespace deltastore;

int main(int argc, char** argv) {
  CLI::App app{"lossy methods on a base/finetune pair"};
  std::string base_path, ft_path;
  std::vector<double> ratios = {8, 16, 32, 64, 128};
  std::vector<std::string> methods = {"deltadq", "deltadq-nodbms", "groupk4", "random4",
                                      "dare",    "bitdelta",       "topk8",   "lowbit"};
  app.add_option("BASE", base_path)->required();
  app.add_option("FINETUNE", ft_path)->required();
  app.add_option("--ratios", ratios)->delimiter(',');
  app.add_option("--methods", methods)->delimiter(',');
  bool per_tensor = false;
  app.add_flag("--per-tensor", per_tensor, "also print each tensor's choice and errors");
  CLI11_PARSE(app, argc, argv);

  auto base = SafetensorsFile::Open(base_path);
  auto ft = SafetensorsFile::Open(ft_path);
  if (!base.ok() || !ft.ok()) {
    std::fprintf(stderr, "cannot open inputs\n");
    return 1;
  }
  auto dev = ProbeComputeDevice();
  std::printf("# %s vs %s on %s\n", ft_path.c_str(), base_path.c_str(), dev.ok() ? dev->name.c_str() : "?");
  std::printf("%-16s %6s %9s %9s %9s %8s\n", "method", "target", "achieved", "weight_err", "output_err",
              "seconds");
  for (double ratio : ratios) {
    for (const auto& mname : methods) {
      bool dbms = mname.find("-nodbms") == std::string::npos;
      auto method = ParseLossyMethod(mname.substr(0, mname.find('-')));
      if (!method) {
        std::fprintf(stderr, "unknown method %s\n", mname.c_str());
        return 1;
      }
      LossyOptions o;
      o.method = *method;
      o.dbms = dbms && *method == LossyMethod::kDeltaDQ;
      o.target_ratio = ratio;
      double err2 = 0, out2 = 0, d2 = 0, dx2 = 0;
      uint64_t stored = 0, delta = 0;
      bool ok = true;
      auto t0 = std::chrono::steady_clock::now();
      uint32_t stream = 0;
      for (const auto& t : (*ft)->header().tensors) {
        const TensorInfo* bt = (*base)->header().Find(t.name);
        if (!bt || bt->shape != t.shape || bt->dtype != t.dtype || t.shape.size() < 2 || !IsFloat(t.dtype))
          continue;
        uint64_t rows = t.shape[0], cols = t.numel() / rows;
        if (rows < 2 || cols < 2) continue;
        std::string a(t.size(), '\0'), b(t.size(), '\0');
        (void)(*base)->ReadTensorRange(*bt, 0, t.size(), a.data());
        (void)(*ft)->ReadTensorRange(t, 0, t.size(), b.data());
        auto r = CompressLossyTensor(t.dtype, a.data(), b.data(), rows, cols, stream++, nullptr, o);
        if (!r.ok()) {
          std::fprintf(stderr, "%s: %s\n", t.name.c_str(), r.status().ToString().c_str());
          ok = false;
          break;
        }
        if (per_tensor) {
          const auto& q = r->report;
          std::printf("  %-28s %s rank %d bits %d g %d k %d %s %6.1fx w_err %.3f out_err %.3f\n",
                      t.name.c_str(), q.estimator.c_str(), q.rank, q.bits, q.group, q.keep,
                      q.shared_scale ? "shared" : "rows", double(q.delta_bytes) / q.stored_bytes,
                      q.weight_error, q.output_error);
        }
        // Weight the per-tensor relative errors back into absolute squared errors.
        double dn2 = 0;
        {
          std::vector<float> x(rows * cols), y(rows * cols);
          ToFloat32(t.dtype, a.data(), rows * cols, x.data());
          ToFloat32(t.dtype, b.data(), rows * cols, y.data());
          for (size_t i = 0; i < x.size(); ++i) dn2 += double(y[i] - x[i]) * (y[i] - x[i]);
        }
        err2 += r->report.weight_error * r->report.weight_error * dn2;
        d2 += dn2;
        out2 += std::pow(r->report.output_error * r->report.delta_output_norm, 2);
        dx2 += std::pow(r->report.delta_output_norm, 2);
        stored += r->report.stored_bytes;
        delta += r->report.delta_bytes;
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!ok) {
        std::printf("%-16s %5.0fx %9s %9s %9s %8.1f\n", mname.c_str(), ratio, "-", "-", "-", secs);
        continue;
      }
      std::printf("%-16s %5.0fx %8.1fx %9.3f %9.3f %8.1f\n", mname.c_str(), ratio, double(delta) / stored,
                  std::sqrt(err2 / d2), std::sqrt(out2 / dx2), secs);
      std::fflush(stdout);
    }
  }
  return 0;
}
