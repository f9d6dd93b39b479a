// ChunkStore: content-addressed blobs (key = sha256 of the stored bytes), reference counted.
//
// Contract:
//  - Put(bytes) stores the bytes under Sha256(bytes) if absent and adds one reference, atomically.
//    It reports whether new bytes were written (dedup is visible to callers for accounting). When the
//    chunk is present but its stored bytes differ from `bytes` (a torn write or a flipped bit on disk),
//    Put rewrites them: storing good bytes again heals a damaged chunk.
//  - Get verifies the digest of what it read; a mismatch is kCorruption and the bytes are never returned.
//    GetUnverified may skip that check where the store checksums its reads itself.
//  - Unref drops one reference; Gc deletes chunks whose count is <= 0 and reports what it freed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/status.h"

namespace deltastore {

struct PutResult {
  Digest digest;
  bool inserted = false;      // true when the bytes were new to the store
  uint64_t stored_bytes = 0;  // bytes written by this call (0 when deduplicated)
};

struct GcStats {
  uint64_t chunks_deleted = 0;
  uint64_t bytes_freed = 0;
};

struct ChunkStoreStats {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

class ChunkStore {
 public:
  virtual ~ChunkStore() = default;

  virtual StatusOr<PutResult> Put(std::string_view bytes) = 0;
  virtual StatusOr<std::string> Get(const Digest& digest) = 0;
  // Get for readers that check what they rebuild end to end (a whole-file download checks the file's
  // sha256 before its last byte goes out). A store whose reads are checksummed on their own (RocksDB
  // blocks) skips the sha256 of the chunk, a third of a download's CPU; the others check it anyway.
  virtual StatusOr<std::string> GetUnverified(const Digest& digest) { return Get(digest); }
  virtual StatusOr<bool> Has(const Digest& digest) = 0;
  // Adds `count` references to an existing chunk (kNotFound if absent).
  virtual Status Ref(const Digest& digest, int64_t count = 1) = 0;
  virtual Status Unref(const Digest& digest, int64_t count = 1) = 0;
  virtual StatusOr<int64_t> RefCount(const Digest& digest) = 0;
  virtual StatusOr<GcStats> Gc() = 0;
  virtual StatusOr<ChunkStoreStats> Stats() = 0;
  // Visits every chunk digest with its reference count (for check and refcount recomputation).
  virtual Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) = 0;
  // Overwrites a chunk's reference count (used by `check --repair` after recomputing from manifests).
  virtual Status SetRefCount(const Digest& digest, int64_t count) = 0;
  // Stores `bytes` under `digest` without checking that one is the hash of the other, as a new chunk
  // with one reference (or replacing the bytes of a present one, its count unchanged). The seam through
  // which the fault-injecting wrapper leaves on "disk" what a torn write would; the registry never
  // calls it, and Get still refuses such bytes.
  virtual Status PutUnverified(const Digest& digest, std::string_view bytes) = 0;
  // A cheap request that fails when the store cannot serve (a server down): for /readyz.
  virtual Status Ping() { return OkStatus(); }
};

}  // namespace deltastore
