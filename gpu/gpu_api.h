// The compute backend as a shared library (libdeltastore_gpu.so) that the server loads on first use:
// libtorch costs ~370 MB of resident memory just by being loaded, so a registry that only moves bytes
// never loads it. This header is torch-free; the table below is what the library exports.
#pragma once

#include "gpu/device.h"
#include "gpu/lossy.h"

namespace deltastore {

// 3: probe_lossy, LossyTensorReport::reason; 4: progress; 5: LossyOptions::measurements; 6: LossyOptions::
// held_residual_bytes and rebuilt (LossyOptions is passed by reference: its layout is part of the API), and
// probe_lossy takes only a large tensor's every s-th row; 7: LossyOptions::device_residual_bytes and
// host_threads
inline constexpr int kGpuApiVersion = 7;

struct GpuApi {
  int version;  // kGpuApiVersion of the library
  StatusOr<ComputeDevice> (*probe)();
  StatusOr<LossyResult> (*compress)(DType dtype, const char* base, const char* finetune, uint32_t rows,
                                    uint32_t cols, uint32_t stream, const float* calib_diag,
                                    const LossyOptions& options);
  StatusOr<std::vector<LossyProbe>> (*probe_lossy)(DType dtype, const char* base, const char* finetune,
                                                   uint32_t rows, uint32_t cols, uint32_t stream,
                                                   const float* calib_diag, const LossyOptions& options,
                                                   const std::vector<double>& ratios);
};

// Loads the library once (thread-safe): $DS_GPU_LIBRARY, else next to the executable
// (../gpu/ in the build tree, the executable's folder, ../lib). Errors say where it looked.
StatusOr<const GpuApi*> LoadGpuApi();
// True once LoadGpuApi succeeded in this process.
bool GpuApiLoaded();

}  // namespace deltastore

extern "C" const deltastore::GpuApi* deltastore_gpu_api();
