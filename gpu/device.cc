#include "gpu/device.h"

#include <torch/torch.h>
#include <torch/version.h>

namespace deltastore {

StatusOr<ComputeDevice> ProbeComputeDevice() {
  try {
    ComputeDevice d;
    d.cuda = torch::cuda::is_available();
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
