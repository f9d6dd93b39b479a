// The compute device the registry's lossy jobs run on, as /readyz reports it.
#pragma once

#include <string>

namespace deltastore {

// "cuda:0" or "cpu" once the compute backend (libdeltastore_gpu.so) is loaded, "unavailable: …" when
// it is loaded but cannot probe its device, and kComputeDeviceNotLoaded before the first lossy job
// loads it (loading libtorch costs ~370 MB, so asking never loads it).
std::string ComputeDeviceName();

inline constexpr const char* kComputeDeviceNotLoaded = "loaded on first lossy job";

}  // namespace deltastore
