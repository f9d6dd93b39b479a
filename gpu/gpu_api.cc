// Exported by libdeltastore_gpu.so.
#include "gpu/gpu_api.h"

extern "C" const deltastore::GpuApi* deltastore_gpu_api() {
  static const deltastore::GpuApi api{deltastore::kGpuApiVersion, &deltastore::ProbeComputeDevice,
                                      &deltastore::CompressLossyTensor, &deltastore::ProbeLossyTensor};
  return &api;
}
