// Torch-free: linked into the server, finds and opens libdeltastore_gpu.so on first use.
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "gpu/gpu_api.h"

namespace deltastore {
namespace {
std::atomic<const GpuApi*> g_api{nullptr};
std::mutex g_mu;
}  // namespace

bool GpuApiLoaded() {
  return g_api.load() != nullptr;
}

StatusOr<const GpuApi*> LoadGpuApi() {
  if (const GpuApi* api = g_api.load()) return api;
  std::lock_guard<std::mutex> lock(g_mu);
  if (const GpuApi* api = g_api.load()) return api;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("DS_GPU_LIBRARY"); env && *env) candidates.emplace_back(env);
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = exe.parent_path();
    for (const char* rel :
         {"../gpu/libdeltastore_gpu.so", "libdeltastore_gpu.so", "../lib/libdeltastore_gpu.so"}) {
      candidates.push_back((dir / rel).lexically_normal().string());
    }
  }
  std::string tried;
  for (const auto& path : candidates) {
    if (!std::filesystem::exists(path, ec)) {
      tried += " " + path + " (absent)";
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      tried += " " + path + " (" + dlerror() + ")";
      continue;
    }
    auto entry = reinterpret_cast<const GpuApi* (*)()>(dlsym(handle, "deltastore_gpu_api"));
    const GpuApi* api = entry ? entry() : nullptr;
    if (api == nullptr || api->version != kGpuApiVersion) {
      tried += " " + path + " (not a matching deltastore compute library)";
      continue;
    }
    g_api.store(api);
    return api;
  }
  return Unavailable("the compute backend (libdeltastore_gpu.so, libtorch) could not be loaded; tried:" +
                     tried);
}

}  // namespace deltastore
