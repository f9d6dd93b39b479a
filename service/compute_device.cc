#include "service/compute_device.h"

#include "gpu/gpu_api.h"

namespace deltastore {

std::string ComputeDeviceName() {
  if (!GpuApiLoaded()) return kComputeDeviceNotLoaded;
  auto api = LoadGpuApi();
  if (!api.ok()) return "unavailable: " + api.status().message();
  auto d = (*api)->probe();
  return d.ok() ? d->name : "unavailable: " + d.status().message();
}

}  // namespace deltastore
