#include "common/allocator.h"

#include <malloc.h>

#include <algorithm>
#include <thread>

namespace deltastore {

void UseServerAllocatorSettings() {
  mallopt(M_MMAP_THRESHOLD, 6 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_ARENA_MAX, static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
}

void ReturnFreeMemory() {
  malloc_trim(0);
}

}  // namespace deltastore
