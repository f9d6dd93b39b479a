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
    return torch::cuda::is_available();
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
