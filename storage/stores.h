// Factories for the store implementations.
#pragma once

#include <memory>
#include <string>

#include "storage/chunk_store.h"
#include "storage/meta_store.h"

namespace deltastore {

// One embedded RocksDB holding both the chunks and the metadata.
struct Stores {
  std::shared_ptr<ChunkStore> chunks;
  std::shared_ptr<MetaStore> meta;
};

struct RocksOptions {
  std::string path;         // directory of the database; created if missing
  bool sync_writes = true;  // fsync the WAL on each commit
};

StatusOr<Stores> OpenRocksStores(const RocksOptions& options);

// In-memory implementations for tests.
std::unique_ptr<ChunkStore> NewMemoryChunkStore();
std::unique_ptr<MetaStore> NewMemoryMetaStore();

// Fault injection (decorator over any ChunkStore), for tests.
struct FaultPlan {
  double write_error_rate = 0;  // Put fails with kIOError
  double read_error_rate = 0;   // Get fails with kIOError
  double bitflip_rate = 0;      // Get returns data with one flipped bit from the inner store (must be caught)
  uint64_t seed = 1;
  int64_t fail_after_puts = -1;  // when >= 0: every Put after this many succeeded fails ("disk full")
};
class FaultInjectingChunkStore;
std::unique_ptr<ChunkStore> NewFaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, FaultPlan plan);

}  // namespace deltastore
