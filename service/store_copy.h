// `deltastored copy`: moves a registry to other stores (the embedded RocksDB to S3 + PostgreSQL, or
// back) with every digest unchanged. Every live chunk is copied with its reference count first, then
// the metadata, so a copy cut short never has a version whose chunks are missing; run it with every
// node of the source stopped.
#pragma once

#include <cstdint>
#include <functional>

#include "storage/stores.h"

namespace deltastore {

struct CopyStats {
  uint64_t chunks = 0, chunk_bytes = 0, records = 0;
};

// FAILED_PRECONDITION when the destination already holds models, or the source has work in flight
// (queued or running jobs, a deletion cut short: start a node on it once to finish them).
StatusOr<CopyStats> CopyStores(const Stores& from, const Stores& to,
                               const std::function<void(const CopyStats&)>& progress);

}  // namespace deltastore
