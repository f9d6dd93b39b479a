#include "common/allocator.h"

#include <malloc.h>

namespace deltastore {

void UseServerAllocatorSettings() {
  mallopt(M_MMAP_THRESHOLD, 6 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

void ReturnFreeMemory() {
  malloc_trim(0);
}

}  // namespace deltastore
