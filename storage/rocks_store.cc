// RocksDB-backed ChunkStore and MetaStore sharing one database.
//
// Column families:
//   "default": store-wide counters ("chunk_count", "chunk_bytes"; int64 LE, merged like refs)
//   "chunks":  32 raw digest bytes -> chunk bytes
//   "refs":    32 raw digest bytes -> int64 LE reference count (additive merge operator)
//   "meta":    namespace + '\0' + key -> value
//
// Invariant: a chunk and its refs entry are created and deleted together in one WriteBatch, so a refs
// entry exists exactly when the chunk does. Every mutation of chunks/refs holds ChunkStore's mutex, so
// Gc never races a Put/Ref that would revive a chunk it is about to delete.

#include <rocksdb/db.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "storage/stores.h"

namespace deltastore {
namespace {

constexpr char kChunksCf[] = "chunks";
constexpr char kRefsCf[] = "refs";
constexpr char kMetaCf[] = "meta";
constexpr char kChunkCountKey[] = "chunk_count";
constexpr char kChunkBytesKey[] = "chunk_bytes";

std::string EncodeInt64(int64_t v) {
  auto u = static_cast<uint64_t>(v);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((u >> (8 * i)) & 0xff);
  return out;
}

bool DecodeInt64(const rocksdb::Slice& s, int64_t* v) {
  if (s.size() != 8) return false;
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(static_cast<uint8_t>(s[i])) << (8 * i);
  *v = static_cast<int64_t>(u);
  return true;
}

// Adds signed int64 little-endian values (two's complement wrap-around, like the counters it models).
class Int64AddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing_value, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger* logger) const override {
    int64_t existing = 0;
    if (existing_value != nullptr && !DecodeInt64(*existing_value, &existing)) return false;
    int64_t delta = 0;
    if (!DecodeInt64(value, &delta)) return false;
    *new_value =
        EncodeInt64(static_cast<int64_t>(static_cast<uint64_t>(existing) + static_cast<uint64_t>(delta)));
    return true;
  }
  const char* Name() const override { return "deltastore.Int64Add"; }
};

Status FromRocks(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return OkStatus();
  std::string msg = std::string(context) + ": " + s.ToString();
  if (s.IsCorruption()) return Corruption(std::move(msg));
  if (s.IsNotFound()) return NotFound(std::move(msg));
  if (s.IsNoSpace()) return DiskFull(std::move(msg));
  return IOError(std::move(msg));
}

// Runs `f` and turns any escaping exception into a Status, so none crosses the module boundary.
template <typename F>
auto Guarded(std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return Internal(std::string(what) + ": " + e.what());
  } catch (...) {
    return Internal(std::string(what) + ": unknown exception");
  }
}

// The open database and its column family handles, owned jointly by both stores.
class RocksDb {
 public:
  RocksDb(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
          rocksdb::ColumnFamilyHandle* def, rocksdb::ColumnFamilyHandle* chunks,
          rocksdb::ColumnFamilyHandle* refs, rocksdb::ColumnFamilyHandle* meta, bool sync)
      : db_(db), handles_(std::move(handles)), default_(def), chunks_(chunks), refs_(refs), meta_(meta) {
    write_options_.sync = sync;
  }
  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;

  ~RocksDb() {
    // Handles first, then the database.
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->Close().PermitUncheckedError();
    delete db_;
  }

  rocksdb::DB* db() const { return db_; }
  rocksdb::ColumnFamilyHandle* default_cf() const { return default_; }
  rocksdb::ColumnFamilyHandle* chunks() const { return chunks_; }
  rocksdb::ColumnFamilyHandle* refs() const { return refs_; }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  const rocksdb::WriteOptions& write_options() const { return write_options_; }

  Status Write(rocksdb::WriteBatch* batch, std::string_view context) {
    return FromRocks(db_->Write(write_options_, batch), context);
  }

 private:
  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* default_;
  rocksdb::ColumnFamilyHandle* chunks_;
  rocksdb::ColumnFamilyHandle* refs_;
  rocksdb::ColumnFamilyHandle* meta_;
  rocksdb::WriteOptions write_options_;
};

class RocksChunkStore final : public ChunkStore {
 public:
  explicit RocksChunkStore(std::shared_ptr<RocksDb> db) : db_(std::move(db)) {}

  StatusOr<PutResult> Put(std::string_view bytes) override {
    return Guarded("chunk put", [&]() -> StatusOr<PutResult> {
      PutResult result;
      result.digest = Sha256::Of(bytes);
      rocksdb::Slice key = ToSlice(result.digest.Raw());
      std::lock_guard<std::mutex> lock(mu_);
      rocksdb::PinnableSlice stored;  // pinned, not copied
      rocksdb::Status g = db_->db()->Get(rocksdb::ReadOptions(), db_->chunks(), key, &stored);
      if (!g.ok() && !g.IsNotFound()) return FromRocks(g, "chunk lookup " + result.digest.ToString());
      const bool exists = g.ok();
      rocksdb::WriteBatch batch;
      rocksdb::Status s;
      if (exists) {
        s = batch.Merge(db_->refs(), key, EncodeInt64(1));
        // Same digest, other bytes: what is stored is damaged (a torn write, a flipped bit). Heal it.
        if (s.ok() && stored.ToStringView() != bytes) s = Rewrite(&batch, key, stored.size(), bytes);
      } else {
        // A fresh chunk starts at exactly one reference, whatever a stale refs entry might say.
        s = AddChunk(&batch, key, bytes);
        result.inserted = true;
        result.stored_bytes = bytes.size();
      }
      DS_RETURN_IF_ERROR(FromRocks(s, "chunk put batch"));
      DS_RETURN_IF_ERROR(db_->Write(&batch, "chunk put " + result.digest.ToString()));
      return result;
    });
  }

  Status PutUnverified(const Digest& digest, std::string_view bytes) override {
    return Guarded("chunk put unverified", [&]() -> Status {
      rocksdb::Slice key = ToSlice(digest.Raw());
      std::lock_guard<std::mutex> lock(mu_);
      rocksdb::PinnableSlice stored;
      rocksdb::Status g = db_->db()->Get(rocksdb::ReadOptions(), db_->chunks(), key, &stored);
      if (!g.ok() && !g.IsNotFound()) return FromRocks(g, "chunk lookup " + digest.ToString());
      rocksdb::WriteBatch batch;
      rocksdb::Status s = g.ok() ? Rewrite(&batch, key, stored.size(), bytes) : AddChunk(&batch, key, bytes);
      DS_RETURN_IF_ERROR(FromRocks(s, "chunk put unverified batch"));
      return db_->Write(&batch, "chunk put unverified " + digest.ToString());
    });
  }

  StatusOr<std::string> Get(const Digest& digest) override { return Read(digest, /*verify=*/true); }
  // RocksDB checks each block's checksum on every read (ReadOptions::verify_checksums), so a bit flipped
  // on disk is still refused.
  StatusOr<std::string> GetUnverified(const Digest& digest) override { return Read(digest, false); }

  StatusOr<bool> Has(const Digest& digest) override {
    return Guarded("chunk has", [&]() -> StatusOr<bool> { return ChunkExists(ToSlice(digest.Raw())); });
  }

  Status Ref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("ref count must be >= 0");
    return Guarded("chunk ref", [&]() -> Status { return AddRefs(digest, count, "ref"); });
  }

  Status Unref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("unref count must be >= 0");
    return Guarded("chunk unref", [&]() -> Status { return AddRefs(digest, -count, "unref"); });
  }

  StatusOr<int64_t> RefCount(const Digest& digest) override {
    return Guarded("chunk refcount",
                   [&]() -> StatusOr<int64_t> { return ReadRefCount(ToSlice(digest.Raw()), digest); });
  }

  StatusOr<GcStats> Gc() override {
    return Guarded("chunk gc", [&]() -> StatusOr<GcStats> {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<std::string> dead;
      {
        std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(rocksdb::ReadOptions(), db_->refs()));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          int64_t count = 0;
          if (!DecodeInt64(it->value(), &count)) {
            return Corruption("gc: malformed refcount for " + HexEncode(it->key().ToStringView()));
          }
          if (count <= 0) dead.push_back(it->key().ToString());
        }
        DS_RETURN_IF_ERROR(FromRocks(it->status(), "gc: scanning refs"));
      }
      GcStats stats;
      if (dead.empty()) return stats;
      rocksdb::WriteBatch batch;
      rocksdb::Status s;
      for (const auto& key : dead) {
        rocksdb::PinnableSlice value;
        rocksdb::Status g = db_->db()->Get(rocksdb::ReadOptions(), db_->chunks(), key, &value);
        if (g.ok()) {
          ++stats.chunks_deleted;
          stats.bytes_freed += value.size();
          if (s.ok()) s = batch.Delete(db_->chunks(), key);
        } else if (!g.IsNotFound()) {
          return FromRocks(g, "gc: reading chunk " + HexEncode(key));
        }
        if (s.ok()) s = batch.Delete(db_->refs(), key);
      }
      if (s.ok() && stats.chunks_deleted > 0) {
        s = batch.Merge(db_->default_cf(), kChunkCountKey,
                        EncodeInt64(-static_cast<int64_t>(stats.chunks_deleted)));
        if (s.ok()) {
          s = batch.Merge(db_->default_cf(), kChunkBytesKey,
                          EncodeInt64(-static_cast<int64_t>(stats.bytes_freed)));
        }
      }
      DS_RETURN_IF_ERROR(FromRocks(s, "gc batch"));
      DS_RETURN_IF_ERROR(db_->Write(&batch, "gc"));
      return stats;
    });
  }

  StatusOr<ChunkStoreStats> Stats() override {
    return Guarded("chunk stats", [&]() -> StatusOr<ChunkStoreStats> {
      // Both counters from one snapshot, so a concurrent Put/Gc is seen entirely or not at all.
      const rocksdb::Snapshot* snap = db_->db()->GetSnapshot();
      rocksdb::ReadOptions ro;
      ro.snapshot = snap;
      int64_t chunks = 0, bytes = 0;
      Status st = ReadCounter(ro, kChunkCountKey, &chunks);
      if (st.ok()) st = ReadCounter(ro, kChunkBytesKey, &bytes);
      db_->db()->ReleaseSnapshot(snap);
      DS_RETURN_IF_ERROR(st);
      if (chunks < 0 || bytes < 0) return Corruption("chunk stats counters are negative");
      return ChunkStoreStats{static_cast<uint64_t>(chunks), static_cast<uint64_t>(bytes)};
    });
  }

  Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) override {
    return Guarded("chunk foreach", [&]() -> Status {
      // Walk "chunks" and "refs" in lockstep (same keys, same order) at one snapshot.
      const rocksdb::Snapshot* snap = db_->db()->GetSnapshot();
      struct Release {
        rocksdb::DB* db;
        const rocksdb::Snapshot* snap;
        ~Release() { db->ReleaseSnapshot(snap); }
      } release{db_->db(), snap};
      rocksdb::ReadOptions ro;
      ro.snapshot = snap;
      std::unique_ptr<rocksdb::Iterator> chunk_it(db_->db()->NewIterator(ro, db_->chunks()));
      std::unique_ptr<rocksdb::Iterator> ref_it(db_->db()->NewIterator(ro, db_->refs()));
      ref_it->SeekToFirst();
      for (chunk_it->SeekToFirst(); chunk_it->Valid(); chunk_it->Next()) {
        rocksdb::Slice key = chunk_it->key();
        while (ref_it->Valid() && ref_it->key().compare(key) < 0) ref_it->Next();
        int64_t count = 0;  // a chunk without a refs entry has no references
        if (ref_it->Valid() && ref_it->key() == key && !DecodeInt64(ref_it->value(), &count)) {
          return Corruption("malformed refcount for " + HexEncode(key.ToStringView()));
        }
        DS_ASSIGN_OR_RETURN(Digest digest, Digest::FromRaw(key.ToStringView()));
        DS_RETURN_IF_ERROR(fn(digest, count, chunk_it->value().size()));
      }
      DS_RETURN_IF_ERROR(FromRocks(chunk_it->status(), "foreach: scanning chunks"));
      return FromRocks(ref_it->status(), "foreach: scanning refs");
    });
  }

  Status SetRefCount(const Digest& digest, int64_t count) override {
    return Guarded("chunk setrefcount", [&]() -> Status {
      rocksdb::Slice key = ToSlice(digest.Raw());
      std::lock_guard<std::mutex> lock(mu_);
      DS_ASSIGN_OR_RETURN(bool exists, ChunkExists(key));
      if (!exists) return NotFound("chunk " + digest.ToString());
      rocksdb::WriteBatch batch;
      DS_RETURN_IF_ERROR(FromRocks(batch.Put(db_->refs(), key, EncodeInt64(count)), "setrefcount batch"));
      return db_->Write(&batch, "setrefcount " + digest.ToString());
    });
  }

 private:
  StatusOr<std::string> Read(const Digest& digest, bool verify) {
    return Guarded("chunk get", [&]() -> StatusOr<std::string> {
      std::string value;
      rocksdb::Status s =
          db_->db()->Get(rocksdb::ReadOptions(), db_->chunks(), ToSlice(digest.Raw()), &value);
      if (s.IsNotFound()) return NotFound("chunk " + digest.ToString());
      DS_RETURN_IF_ERROR(FromRocks(s, "chunk get " + digest.ToString()));
      if (verify && Sha256::Of(value) != digest) {
        return Corruption("chunk " + digest.ToString() + ": stored bytes do not match their digest");
      }
      return value;
    });
  }

  static rocksdb::Slice ToSlice(std::string_view s) { return {s.data(), s.size()}; }

  // Adds to `batch` a new chunk with one reference, and counts it.
  rocksdb::Status AddChunk(rocksdb::WriteBatch* batch, const rocksdb::Slice& key, std::string_view bytes) {
    rocksdb::Status s = batch->Put(db_->chunks(), key, ToSlice(bytes));
    if (s.ok()) s = batch->Put(db_->refs(), key, EncodeInt64(1));
    if (s.ok()) s = batch->Merge(db_->default_cf(), kChunkCountKey, EncodeInt64(1));
    if (s.ok()) {
      s = batch->Merge(db_->default_cf(), kChunkBytesKey, EncodeInt64(static_cast<int64_t>(bytes.size())));
    }
    return s;
  }

  // Adds to `batch` the replacement of a present chunk's bytes (`old_size` of them), its count unchanged.
  rocksdb::Status Rewrite(rocksdb::WriteBatch* batch, const rocksdb::Slice& key, size_t old_size,
                          std::string_view bytes) {
    rocksdb::Status s = batch->Put(db_->chunks(), key, ToSlice(bytes));
    if (s.ok()) {
      s = batch->Merge(db_->default_cf(), kChunkBytesKey,
                       EncodeInt64(static_cast<int64_t>(bytes.size()) - static_cast<int64_t>(old_size)));
    }
    return s;
  }

  StatusOr<bool> ChunkExists(const rocksdb::Slice& key) {
    rocksdb::PinnableSlice value;  // pinned, not copied
    rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), db_->chunks(), key, &value);
    if (s.IsNotFound()) return false;
    DS_RETURN_IF_ERROR(FromRocks(s, "chunk lookup " + HexEncode(key.ToStringView())));
    return true;
  }

  StatusOr<int64_t> ReadRefCount(const rocksdb::Slice& key, const Digest& digest) {
    std::string value;
    rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), db_->refs(), key, &value);
    if (s.IsNotFound()) return NotFound("chunk " + digest.ToString());
    DS_RETURN_IF_ERROR(FromRocks(s, "refcount " + digest.ToString()));
    int64_t count = 0;
    if (!DecodeInt64(value, &count)) return Corruption("malformed refcount for " + digest.ToString());
    return count;
  }

  // Ref/Unref: the refs entry exists exactly when the chunk does (see the invariant at the top).
  Status AddRefs(const Digest& digest, int64_t delta, std::string_view what) {
    rocksdb::Slice key = ToSlice(digest.Raw());
    std::lock_guard<std::mutex> lock(mu_);
    DS_RETURN_IF_ERROR(ReadRefCount(key, digest).status());
    rocksdb::WriteBatch batch;
    DS_RETURN_IF_ERROR(FromRocks(batch.Merge(db_->refs(), key, EncodeInt64(delta)), "refs batch"));
    return db_->Write(&batch, std::string(what) + " " + digest.ToString());
  }

  Status ReadCounter(const rocksdb::ReadOptions& ro, const char* name, int64_t* out) {
    std::string value;
    rocksdb::Status s = db_->db()->Get(ro, db_->default_cf(), name, &value);
    if (s.IsNotFound()) {
      *out = 0;
      return OkStatus();
    }
    DS_RETURN_IF_ERROR(FromRocks(s, std::string("reading counter ") + name));
    if (!DecodeInt64(value, out)) return Corruption(std::string("malformed counter ") + name);
    return OkStatus();
  }

  std::shared_ptr<RocksDb> db_;
  std::mutex mu_;  // serialises every mutation of "chunks"/"refs" (check-then-write, and Gc)
};

class RocksMetaStore final : public MetaStore {
 public:
  explicit RocksMetaStore(std::shared_ptr<RocksDb> db) : db_(std::move(db)) {}

  StatusOr<std::string> Get(std::string_view ns, std::string_view key) override {
    return Guarded("meta get", [&]() -> StatusOr<std::string> {
      DS_RETURN_IF_ERROR(CheckNamespace(ns));
      std::string value;
      rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), db_->meta(), MetaKey(ns, key), &value);
      if (s.IsNotFound()) return NotFound(std::string(ns) + "/" + std::string(key));
      DS_RETURN_IF_ERROR(FromRocks(s, "meta get " + std::string(ns)));
      return value;
    });
  }

  Status Commit(const MetaBatch& batch) override {
    return Guarded("meta commit", [&]() -> Status {
      if (batch.empty()) return OkStatus();
      // One process owns the database: every commit holds the lock from its expectation reads to its
      // write, which makes the expectations hold at the write.
      std::lock_guard<std::mutex> lock(commit_mu_);
      for (const auto& e : batch.expects) {
        DS_RETURN_IF_ERROR(CheckNamespace(e.ns));
        std::string value;
        rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), db_->meta(), MetaKey(e.ns, e.key), &value);
        if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "meta get " + e.ns);
        const std::optional<std::string> now =
            s.ok() ? std::optional<std::string>(std::move(value)) : std::nullopt;
        if (now != e.value) return CommitConflict(e.ns + "/" + e.key + " changed");
      }
      rocksdb::WriteBatch wb;
      for (const auto& op : batch.ops) {
        DS_RETURN_IF_ERROR(CheckNamespace(op.ns));
        rocksdb::Status s = op.put ? wb.Put(db_->meta(), MetaKey(op.ns, op.key), op.value)
                                   : wb.Delete(db_->meta(), MetaKey(op.ns, op.key));
        DS_RETURN_IF_ERROR(FromRocks(s, "meta batch"));
      }
      return db_->Write(&wb, "meta commit");
    });
  }

  Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) override {
    return Guarded("meta scan", [&]() -> Status {
      DS_RETURN_IF_ERROR(CheckNamespace(ns));
      const std::string full_prefix = MetaKey(ns, prefix);
      const size_t ns_len = ns.size() + 1;
      std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
      if (!start_after.empty() && start_after >= prefix) {
        const std::string after = MetaKey(ns, start_after);
        it->Seek(after);
        if (it->Valid() && it->key() == after) it->Next();
      } else {
        it->Seek(full_prefix);
      }
      for (; it->Valid() && it->key().starts_with(full_prefix); it->Next()) {
        std::string_view k = it->key().ToStringView();
        k.remove_prefix(ns_len);
        if (!fn(k, it->value().ToStringView())) break;
      }
      return FromRocks(it->status(), "meta scan " + std::string(ns));
    });
  }

 private:
  static Status CheckNamespace(std::string_view ns) {
    if (ns.find('\0') != std::string_view::npos) return InvalidArgument("namespace contains a NUL byte");
    return OkStatus();
  }
  static std::string MetaKey(std::string_view ns, std::string_view key) {
    std::string out;
    out.reserve(ns.size() + 1 + key.size());
    out.append(ns);
    out.push_back('\0');
    out.append(key);
    return out;
  }

  std::shared_ptr<RocksDb> db_;
  std::mutex commit_mu_;  // serialises commits (expectation reads, then the write)
};

StatusOr<Stores> OpenRocksStoresImpl(const RocksOptions& options) {
  if (options.path.empty()) return InvalidArgument("rocksdb path is empty");
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);
  if (ec) return IOError("creating " + options.path + ": " + ec.message());

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;

  auto add_op = std::make_shared<Int64AddOperator>();
  rocksdb::ColumnFamilyOptions default_opts;
  default_opts.merge_operator = add_op;
  rocksdb::ColumnFamilyOptions chunk_opts;
  // Chunks are compressed already: Snappy on them costs CPU at every flush and compaction and saves
  // nothing. (Blocks written before this setting keep their Snappy and still read.)
  chunk_opts.compression = rocksdb::kNoCompression;
  // A chunk waits in a memtable until its flush: RocksDB's default of two 64 MiB tables held up to 128 MiB
  // of a version job's memory (bench/big_ingest.py, the 0.9 GB base of a 1-layer pair: peak 597 -> 537
  // MiB with 16 MiB). Chunks are up to a few MiB, so a flush still writes several to a file.
  chunk_opts.write_buffer_size = 16 << 20;
  rocksdb::ColumnFamilyOptions ref_opts;
  ref_opts.merge_operator = add_op;
  rocksdb::ColumnFamilyOptions meta_opts;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, default_opts},
      {kChunksCf, chunk_opts},
      {kRefsCf, ref_opts},
      {kMetaCf, meta_opts},
  };
  // RocksDB refuses to open a database unless every existing column family is named; keep unknown ones
  // (from a newer version, say) open with default options.
  std::vector<std::string> existing;
  rocksdb::Status ls = rocksdb::DB::ListColumnFamilies(db_options, options.path, &existing);
  if (ls.ok()) {
    std::set<std::string> known;
    for (const auto& d : descriptors) known.insert(d.name);
    for (const auto& name : existing) {
      if (!known.count(name)) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
  }

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, descriptors, &handles, &raw);
  if (!s.ok()) {
    for (auto* h : handles) delete h;
    delete raw;
    return FromRocks(s, "opening rocksdb at " + options.path);
  }
  auto db = std::make_shared<RocksDb>(raw, handles, handles[0], handles[1], handles[2], handles[3],
                                      options.sync_writes);
  Stores stores;
  stores.chunks = std::make_shared<RocksChunkStore>(db);
  stores.meta = std::make_shared<RocksMetaStore>(db);
  return stores;
}

}  // namespace

StatusOr<Stores> OpenRocksStores(const RocksOptions& options) {
  return Guarded("open rocksdb", [&]() -> StatusOr<Stores> { return OpenRocksStoresImpl(options); });
}

}  // namespace deltastore
