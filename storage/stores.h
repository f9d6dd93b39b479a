// Factories for the store implementations.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "storage/chunk_store.h"
#include "storage/meta_store.h"

namespace deltastore {

class S3Client;
// A registry's stores: by default one embedded RocksDB holds the chunks and the metadata; OpenStores
// puts either on a server instead (chunks on S3, metadata on PostgreSQL).
struct Stores {
  std::shared_ptr<ChunkStore> chunks;
  std::shared_ptr<MetaStore> meta;
  // With chunks on S3: the same bucket, for upload bytes (service/upload_parts.h); null otherwise.
  std::shared_ptr<S3Client> objects;
};

struct RocksOptions {
  std::string path;         // directory of the database; created if missing
  bool sync_writes = true;  // fsync the WAL on each commit
};

StatusOr<Stores> OpenRocksStores(const RocksOptions& options);

// Metadata on PostgreSQL (storage/pg_meta_store.cc), shared by several registry nodes. Connects once
// and creates its tables if missing: StoreUnavailable or PermissionDenied, with the reason, otherwise.
struct PgOptions {
  std::string url;  // postgresql://user[:password]@host:port/db (libpq's connection URI)
  size_t max_connections = 16;
};
StatusOr<std::unique_ptr<MetaStore>> OpenPgMetaStore(const PgOptions& options);

// Chunks on S3-compatible object storage (storage/s3_chunk_store.cc, docs/s3_layout.md); their reference
// counts are rows of `refs` (the registry's MetaStore). Checks the endpoint, the credentials and the
// bucket (created when missing) before it returns.
struct S3Options;
StatusOr<std::unique_ptr<ChunkStore>> OpenS3ChunkStore(const S3Options& options,
                                                       std::shared_ptr<MetaStore> refs);

// Where a registry keeps its metadata and chunks (storage/open_stores.cc): each in the embedded RocksDB
// under `rocks_dir` unless a URL moves it to a server.
struct StoreLocations {
  std::string rocks_dir;
  bool sync_writes = true;
  std::string meta_url;   // postgresql://... (empty: embedded)
  std::string chunk_url;  // s3://bucket/prefix?endpoint=... (empty: embedded)
};
StatusOr<Stores> OpenStores(const StoreLocations& where);

// In-memory implementations for tests.
std::unique_ptr<ChunkStore> NewMemoryChunkStore();
std::unique_ptr<MetaStore> NewMemoryMetaStore();

// Fault injection (decorators over any ChunkStore / MetaStore), for tests. Deterministic from `seed`.
struct FaultPlan {
  double write_error_rate = 0;  // Put fails with kIOError
  double read_error_rate = 0;   // Get fails with kIOError
  double bitflip_rate = 0;      // Get returns data with one flipped bit from the inner store (must be caught)
  uint64_t seed = 1;
  int64_t fail_after_puts = -1;  // when >= 0: every Put after this many succeeded fails ("disk full")

  // Torn writes, each followed by a crash: the write persists only a part of itself, then every later
  // call through the wrappers sharing this plan's state fails with kIOError ("the process is dead"),
  // so nothing after the tear reaches the inner stores. Reopen the inner stores to see what survived.
  int64_t torn_put_at = -1;  // when >= 0: Put number `torn_put_at` (0-based) keeps only a prefix of its
                             // bytes (torn_keep of them, rounded down) under the full digest
  // MetaStore::Commit: the first batch this returns true for applies only its first ops (torn_keep of
  // them, rounded down) as one commit.
  std::function<bool(const MetaBatch&)> tear_commit_if;
  double torn_keep = 0.5;
};
class FaultInjectingChunkStore;
std::unique_ptr<ChunkStore> NewFaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, FaultPlan plan);
std::unique_ptr<MetaStore> NewFaultInjectingMetaStore(std::shared_ptr<MetaStore> inner, FaultPlan plan);
// Both stores of one "process": a torn write in either crashes both.
Stores NewFaultInjectingStores(Stores inner, FaultPlan plan);

}  // namespace deltastore
