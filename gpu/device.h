// The compute backend's device: CUDA when libtorch sees a GPU, the CPU otherwise.
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

// Probes libtorch once (cheap after the first call).
StatusOr<ComputeDevice> ProbeComputeDevice();

}  // namespace deltastore
