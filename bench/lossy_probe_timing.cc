// Times the rate allocation's work per tensor in process: the 9 quick probes (one ProbeLossyTensor call)
// and the final deltadq search, for every 2-D float tensor of at least 4096 elements; prints each
// tensor's seconds and the final candidate's reason, then the weights per second (issue 17).
//   lossy_probe_timing BASE FINETUNE RATIO
// DS_HELD_RESIDUAL_MB=N sets LossyOptions::held_residual_bytes (on the CPU, to time a large tensor's refit
// with its residual held, as a GPU holds it). A tensor over 16 MiB gets the machine's cores as its host
// threads, as the server gives them (LossyOptions::host_threads); DS_HOST_THREADS=N sets another count.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include "codec/safetensors.h"
#include "gpu/lossy.h"
using namespace deltastore;
int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: lossy_probe_timing BASE FINETUNE RATIO\n");
    return 1;
  }
  auto base = SafetensorsFile::Open(argv[1]);
  auto ft = SafetensorsFile::Open(argv[2]);
  if (!base.ok() || !ft.ok()) {
    std::fprintf(stderr, "cannot open inputs\n");
    return 1;
  }
  double ratio = std::stod(argv[3]);
  const double mult[] = {0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0};
  double tp = 0, tf = 0;
  uint64_t n = 0;
  uint32_t stream = 0;
  for (const auto& t : (*ft)->header().tensors) {
    const TensorInfo* bt = (*base)->header().Find(t.name);
    if (!bt || t.shape.size() < 2 || t.numel() < 4096) continue;
    uint64_t rows = t.shape[0], cols = t.numel() / rows;
    std::string a(t.size(), '\0'), b(t.size(), '\0');
    (void)(*base)->ReadTensorRange(*bt, 0, t.size(), a.data());
    (void)(*ft)->ReadTensorRange(t, 0, t.size(), b.data());
    LossyOptions o;
    o.target_ratio = ratio;
    if (const char* mb = std::getenv("DS_HELD_RESIDUAL_MB")) o.held_residual_bytes = std::stoull(mb) << 20;
    if (t.size() > (uint64_t{16} << 20))
      o.host_threads = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* n = std::getenv("DS_HOST_THREADS")) o.host_threads = std::stoi(n);
    std::vector<double> rs;
    for (double m : mult) rs.push_back(ratio / m);
    // The probes take every s-th row of a large tensor, as the rate allocation gives them.
    const uint32_t s = LossySearchRowStride(static_cast<uint32_t>(rows), static_cast<uint32_t>(cols), o);
    const std::string sa = EveryNthRow(a.data(), static_cast<uint32_t>(rows), t.size() / rows, s);
    const std::string sb = EveryNthRow(b.data(), static_cast<uint32_t>(rows), t.size() / rows, s);
    auto t0 = std::chrono::steady_clock::now();
    auto p = ProbeLossyTensor(t.dtype, sa.data(), sb.data(), rows, cols, stream, nullptr, o, rs);
    auto t1 = std::chrono::steady_clock::now();
    auto r = CompressLossyTensor(t.dtype, a.data(), b.data(), rows, cols, stream++, nullptr, o);
    auto t2 = std::chrono::steady_clock::now();
    double dp = std::chrono::duration<double>(t1 - t0).count(),
           df = std::chrono::duration<double>(t2 - t1).count();
    tp += dp;
    tf += df;
    n += rows * cols;
    std::printf("%-30s %6lux%-6lu probe %.3f final %.3f %s\n", t.name.c_str(), rows, cols, dp, df,
                r.ok() ? r->report.reason.c_str() : "err");
  }
  std::printf("total %lu weights probe %.2f s final %.2f s => %.0f w/s\n", n, tp, tf, n / (tp + tf));
}
