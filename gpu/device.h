// The compute backend's device: CUDA when libtorch sees a GPU (unless DS_COMPUTE_DEVICE=cpu), the CPU
// otherwise.
// Only gpu/ includes torch headers; everything it exports speaks Status.
#pragma once

#include <string>

#include "common/status.h"

namespace deltastore {

struct ComputeDevice {
  std::string name;  // "cuda:0" or "cpu"
  bool cuda = false;
  int threads = 0;  // intra-op threads libtorch uses on the CPU
  std::string torch_version;
};

// True when compute runs on CUDA: libtorch sees a GPU and the environment does not say
// DS_COMPUTE_DEVICE=cpu (scripts/gpu_check.sh compares both on one machine). Decided once.
bool UseCuda();

// Probes libtorch once (cheap after the first call).
StatusOr<ComputeDevice> ProbeComputeDevice();

}  // namespace deltastore
