#include "gpu/device.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <string_view>

namespace deltastore {

bool UseCuda() {
  static const bool cuda = [] {
    const char* env = std::getenv("DS_COMPUTE_DEVICE");
    if (env != nullptr && std::string_view(env) == "cpu") return false;
    if (!torch::cuda::is_available()) return false;
    // libtorch loads its CUDA linear algebra (cuSOLVER) on the first linalg call, and two threads making
    // that first call at once fail one of them ("lazy wrapper should be called at most once": a lossy job
    // on an H200 failed so, its tensors searched in parallel). Load it here, once, before any search runs:
    // every device computation asks this function first, and other threads wait for its initializer.
    torch::NoGradGuard no_grad;
    const auto m = torch::eye(2, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCUDA));
    (void)torch::linalg_qr(m);
    return true;
  }();
  return cuda;
}

StatusOr<ComputeDevice> ProbeComputeDevice() {
  try {
    ComputeDevice d;
    d.cuda = UseCuda();
    d.name = d.cuda ? "cuda:0" : "cpu";
    d.threads = torch::get_num_threads();
    d.torch_version = TORCH_VERSION;
    // A tiny computation on the device proves the backend works, not just that it loaded.
    auto t = torch::ones({4}, torch::TensorOptions().device(d.cuda ? torch::kCUDA : torch::kCPU));
    if (t.sum().item<float>() != 4.0f) return Internal("libtorch returned a wrong sum");
    return d;
  } catch (const c10::Error& e) {
    return Internal(std::string("libtorch: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Internal(std::string("libtorch: ") + e.what());
  }
}

}  // namespace deltastore
