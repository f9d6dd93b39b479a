// Peak memory of one tensor's lossy compression, by phase of its work (a benchmark: it prints, never
// asserts). Reads one tensor of a base/finetune pair, then runs the rate allocation's probes of it and its
// compression, as the registry does, sampling the process's RSS at every progress step:
//   lossy_memory BASE FINETUNE TENSOR [--ratio 16] [--server-allocator]
// Prints, per phase (the fraction ranges of gpu/lossy.cc's Ticker), the largest RSS seen beyond the RSS
// before the call, and the process's peak (VmHWM) beyond the RSS after the compute library loaded.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>

#include "codec/safetensors.h"
#include "common/allocator.h"
#include "common/sha256.h"
#include "gpu/lossy.h"

using namespace deltastore;

namespace {

// A /proc/self/status field in MiB.
double StatusMiB(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string want = std::string(field) + ":";
  while (std::getline(f, line)) {
    if (line.rfind(want, 0) == 0) return std::stod(line.substr(want.size())) / 1024.0;
  }
  return 0;
}

const char* PhaseOf(double fraction, bool probe) {
  if (probe) return fraction < 0.05 ? "probe: prepare" : "probe: search";
  if (fraction < 0.05) return "compress: prepare";
  if (fraction < 0.4) return "compress: search on a subsample (or the whole search)";
  if (fraction < 0.95) return "compress: refit on the whole tensor";
  return "compress: finish";
}

// Starts a new peak (VmHWM) at the current RSS.
void ResetPeak() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"peak memory of one tensor's lossy compression"};
  std::string base_path, ft_path, name;
  double ratio = 16;
  app.add_option("BASE", base_path)->required();
  app.add_option("FINETUNE", ft_path)->required();
  app.add_option("TENSOR", name)->required();
  app.add_option("--ratio", ratio);
  bool server_allocator = false;
  app.add_flag("--server-allocator", server_allocator, "deltastored's malloc settings (common/allocator.h)");
  CLI11_PARSE(app, argc, argv);
  if (server_allocator) UseServerAllocatorSettings();
  auto base = SafetensorsFile::Open(base_path);
  auto ft = SafetensorsFile::Open(ft_path);
  if (!base.ok() || !ft.ok()) return std::fprintf(stderr, "cannot open inputs\n"), 1;
  const TensorInfo* t = (*ft)->header().Find(name);
  const TensorInfo* bt = (*base)->header().Find(name);
  if (!t || !bt || t->shape.size() != 2) return std::fprintf(stderr, "no 2-D tensor %s\n", name.c_str()), 1;
  const auto rows = static_cast<uint32_t>(t->shape[0]), cols = static_cast<uint32_t>(t->shape[1]);
  std::string a(t->size(), '\0'), b(t->size(), '\0');
  if (!(*base)->ReadTensorRange(*bt, 0, t->size(), a.data()).ok() ||
      !(*ft)->ReadTensorRange(*t, 0, t->size(), b.data()).ok())
    return std::fprintf(stderr, "cannot read %s\n", name.c_str()), 1;
  LossyOptions o;
  o.target_ratio = ratio;
  // Loads the compute library (libtorch and its pools) on a small tensor first.
  {
    std::string x(64 * 64 * 4, '\0'), y(64 * 64 * 4, '\1');
    (void)CompressLossyTensor(DType::kF32, x.data(), y.data(), 64, 64, 0, nullptr, o);
  }
  std::printf(
      "# %s %ux%u %s, %.0f MiB of bytes; RSS with the compute library loaded and the pair read: %.0f MiB\n",
      name.c_str(), rows, cols, DTypeName(t->dtype).data(), 2.0 * t->size() / (1 << 20), StatusMiB("VmRSS"));
  std::map<std::string, double> peak;
  bool probing = true;
  double before = 0;
  // The peak (VmHWM) as each step reports: a rise is the work since the previous step's.
  std::string last_step = "start";
  double last_hwm = 0;
  std::vector<std::pair<std::string, double>> rises;
  o.progress = [&](double f) {
    double& p = peak[PhaseOf(f, probing)];
    p = std::max(p, StatusMiB("VmRSS") - before);
    const double hwm = StatusMiB("VmHWM") - before;
    char step[96];
    std::snprintf(step, sizeof step, "%s %.4f", probing ? "probe" : "compress", f);
    if (hwm > last_hwm + 16) rises.emplace_back(last_step + " -> " + step, hwm);
    last_hwm = std::max(last_hwm, hwm);
    last_step = step;
    return true;
  };
  std::vector<double> ratios;
  for (double m : {0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0}) ratios.push_back(ratio / m);
  o.measurements = std::make_shared<LossyMeasurements>();
  double after_probes = 0;
  Status failed;
  StatusOr<LossyResult> r = Internal("not run");
  Sha256 rebuilt;
  // On a thread of its own, as the server's jobs run (a thread's allocations come from its own arena).
  std::thread([&] {
    ResetPeak();
    before = StatusMiB("VmRSS");
    // Every s-th row of a large tensor, as the rate allocation gives them (read from the whole pair here).
    const uint32_t s = LossySearchRowStride(rows, cols, o);
    const std::string sa = EveryNthRow(a.data(), rows, t->size() / rows, s);
    const std::string sb = EveryNthRow(b.data(), rows, t->size() / rows, s);
    auto probes = ProbeLossyTensor(t->dtype, sa.data(), sb.data(), rows, cols, 0, nullptr, o, ratios);
    if (!probes.ok()) {
      failed = probes.status();
      return;
    }
    after_probes = StatusMiB("VmHWM") - before;
    probing = false;
    ResetPeak();
    before = StatusMiB("VmRSS");
    last_hwm = 0, last_step = "start";
    // The rebuilt rows hashed as they come, as the registry's ingest takes them.
    o.rebuilt = [&rebuilt](std::string_view rows) { rebuilt.Update(rows); };
    r = CompressLossyTensor(t->dtype, a.data(), b.data(), rows, cols, 0, nullptr, o);
  }).join();
  if (!failed.ok()) return std::fprintf(stderr, "%s\n", failed.ToString().c_str()), 1;
  if (!r.ok()) return std::fprintf(stderr, "%s\n", r.status().ToString().c_str()), 1;
  std::printf("| phase | largest RSS seen beyond the RSS before the call, MiB |\n|---|---|\n");
  for (const auto& [phase, mib] : peak) std::printf("| %s | %.0f |\n", phase.c_str(), mib);
  std::printf(
      "steps between which the peak rose by over 16 MiB (fraction of the call's work), and to what:\n");
  for (const auto& [between, mib] : rises) std::printf("  %s: %.0f MiB\n", between.c_str(), mib);
  std::printf(
      "peak RSS (VmHWM) beyond the RSS before each call: probes %.0f MiB, compression %.0f MiB; "
      "%.2fx stored ratio, chunk %zu B, rebuilt tensor's sha256 %s\n",
      after_probes, StatusMiB("VmHWM") - before, double(t->size()) / r->chunk.size(), r->chunk.size(),
      rebuilt.Finish().Hex().c_str());
  return 0;
}
