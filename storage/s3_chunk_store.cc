// S3ChunkStore: chunks as objects of an S3-compatible bucket, their reference counts as rows of a
// MetaStore (PostgreSQL when several nodes share the store), changed only by conditional commits, so
// nodes sharing the bucket and the rows keep the counts exact. Layout, row format and the GC protocol
// with its races: docs/s3_layout.md.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <thread>
#include <utility>

#include "storage/s3_client.h"
#include "storage/stores.h"

namespace deltastore {

namespace {

constexpr char kRefs[] = "chunk_refs";  // digest hex -> Row
// A deleter sends its DELETE only this soon after making its mark (or it leaves the rest to whoever
// takes the mark over once it is stale).
constexpr int64_t kStartDeleteWithinMs = 30 * 1000;
// A Put that counted a reference to a chunk another Put is uploading waits for that upload until its
// mark is this old, then uploads the bytes itself (the same bytes: harmless).
constexpr int64_t kUploadWaitMs = 30 * 1000;
// The longest a Put waits for a live deletion of its chunk before it answers STORE_UNAVAILABLE.
constexpr auto kDeletionWait = std::chrono::seconds(30);
constexpr auto kPoll = std::chrono::milliseconds(5);

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "1 <refs> <size> <uploading_since_ms> <deleting_since_ms>" (docs/s3_layout.md; the leading 1 is the
// row format's version).
struct Row {
  int64_t refs = 0;
  uint64_t size = 0;               // of the object as last written
  int64_t uploading_since_ms = 0;  // > 0: the Put that made the row has not finished uploading
  int64_t deleting_since_ms = 0;   // > 0: a GC is deleting the object; the row goes next

  std::string Encode() const {
    char buf[128];
    std::snprintf(buf, sizeof(buf), "1 %" PRId64 " %" PRIu64 " %" PRId64 " %" PRId64, refs, size,
                  uploading_since_ms, deleting_since_ms);
    return buf;
  }
  static StatusOr<Row> Parse(const std::string& text) {
    Row r;
    int version = 0;
    int consumed = 0;
    if (std::sscanf(text.c_str(), "%d %" SCNd64 " %" SCNu64 " %" SCNd64 " %" SCNd64 "%n", &version, &r.refs,
                    &r.size, &r.uploading_since_ms, &r.deleting_since_ms, &consumed) != 5 ||
        version != 1 || static_cast<size_t>(consumed) != text.size()) {
      return Corruption("chunk reference row '" + text + "' does not parse (format 1 expected)");
    }
    return r;
  }
};

class S3ChunkStore final : public ChunkStore {
 public:
  S3ChunkStore(std::unique_ptr<S3Client> s3, std::shared_ptr<MetaStore> meta)
      : s3_(std::move(s3)),
        meta_(std::move(meta)),
        lease_ms_(2 * s3_->options().WorstRequestMs() + 60 * 1000) {}

  StatusOr<PutResult> Put(std::string_view bytes) override {
    PutResult result;
    result.digest = Sha256::Of(bytes);
    const std::string hex = result.digest.Hex();
    const auto deadline = std::chrono::steady_clock::now() + kDeletionWait;
    for (;;) {
      DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(hex));
      std::optional<Row> row;
      if (raw) {
        DS_ASSIGN_OR_RETURN(row, Row::Parse(*raw));
      }
      if (row && row->deleting_since_ms > 0) {
        // A GC is deleting the object: wait for it to finish, or finish a deletion its node left.
        if (NowMs() - row->deleting_since_ms > lease_ms_) {
          DS_RETURN_IF_ERROR(TakeOverDeletion(hex, *raw, *row).status());
        } else if (std::chrono::steady_clock::now() > deadline) {
          return StoreUnavailable("chunk sha256:" + hex + " is being deleted by another node; try again");
        } else {
          std::this_thread::sleep_for(kPoll);
        }
        continue;
      }
      Row next = row.value_or(Row{0, bytes.size(), NowMs(), 0});
      next.refs += 1;
      MetaBatch batch;
      batch.Expect(kRefs, hex, raw);
      batch.Put(kRefs, hex, next.Encode());
      Status s = meta_->Commit(batch);
      if (s.reason() == Reason::kCommitConflict) continue;
      DS_RETURN_IF_ERROR(s);
      // The reference is counted (so no GC takes the chunk now); then the object.
      result.inserted = !row;
      auto uploaded = row ? EnsureObject(hex, bytes) : Upload(hex, bytes);
      if (!uploaded.ok()) {
        // The caller holds no reference: take it back (best effort), and the mark of an upload that
        // will not come (a Put waiting for it then uploads itself; a GC may collect the row).
        (void)Change(hex, [made = !row](Row* r) {
          r->refs -= 1;
          if (made) r->uploading_since_ms = 0;
        });
        return uploaded.status();
      }
      if (*uploaded) result.stored_bytes = bytes.size();
      return result;
    }
  }

  StatusOr<std::string> Get(const Digest& digest) override {
    auto bytes = s3_->Get(Key(digest.Hex()));
    if (!bytes.ok()) {
      if (bytes.status().code() == StatusCode::kNotFound) return NotFound("chunk " + digest.ToString());
      return bytes.status();
    }
    if (Sha256::Of(*bytes) != digest) {
      return Corruption("chunk " + digest.ToString() + ": stored bytes do not match their digest");
    }
    return bytes;
  }

  StatusOr<bool> Has(const Digest& digest) override {
    DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(digest.Hex()));
    if (!raw) return false;
    DS_ASSIGN_OR_RETURN(Row row, Row::Parse(*raw));
    return row.deleting_since_ms == 0;
  }

  Status Ref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("ref count must be >= 0");
    return Change(digest.Hex(), [count](Row* r) { r->refs += count; });
  }

  Status Unref(const Digest& digest, int64_t count) override {
    if (count < 0) return InvalidArgument("unref count must be >= 0");
    return Change(digest.Hex(), [count](Row* r) { r->refs -= count; });
  }

  Status SetRefCount(const Digest& digest, int64_t count) override {
    return Change(digest.Hex(), [count](Row* r) { r->refs = count; });
  }

  StatusOr<int64_t> RefCount(const Digest& digest) override {
    DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(digest.Hex()));
    if (!raw) return NotFound("chunk " + digest.ToString());
    DS_ASSIGN_OR_RETURN(Row row, Row::Parse(*raw));
    return row.refs;
  }

  // Rows with no reference are marked (conditionally: a reference counted meanwhile keeps the chunk),
  // then their object deleted, then the row; marks older than the lease, left by a node that died, are
  // taken over. Rows a live Put is still uploading for are left for a later run.
  StatusOr<GcStats> Gc() override {
    std::vector<std::pair<std::string, std::string>> garbage;
    const int64_t now = NowMs();
    DS_RETURN_IF_ERROR(meta_->Scan(kRefs, "", "", [&](std::string_view key, std::string_view value) {
      auto row = Row::Parse(std::string(value));
      if (!row.ok()) return true;  // ForEach (and so `check`) reports it
      const bool stale_mark = row->deleting_since_ms > 0 && now - row->deleting_since_ms > lease_ms_;
      const bool uploading = row->uploading_since_ms > 0 && now - row->uploading_since_ms <= lease_ms_;
      if ((row->refs <= 0 && row->deleting_since_ms == 0 && !uploading) || stale_mark) {
        garbage.emplace_back(key, value);
      }
      return true;
    }));
    GcStats stats;
    for (const auto& [hex, raw] : garbage) {
      DS_ASSIGN_OR_RETURN(Row row, Row::Parse(raw));
      DS_ASSIGN_OR_RETURN(bool deleted, TakeOverDeletion(hex, raw, row));
      if (!deleted) continue;
      ++stats.chunks_deleted;
      stats.bytes_freed += row.size;
    }
    return stats;
  }

  StatusOr<ChunkStoreStats> Stats() override {
    ChunkStoreStats stats;
    DS_RETURN_IF_ERROR(ForEach([&](const Digest&, int64_t, uint64_t size) {
      ++stats.chunks;
      stats.bytes += size;
      return OkStatus();
    }));
    return stats;
  }

  Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) override {
    std::vector<std::pair<Digest, Row>> rows;  // copied out: the visitor may call back into the store
    Status bad;
    DS_RETURN_IF_ERROR(meta_->Scan(kRefs, "", "", [&](std::string_view key, std::string_view value) {
      auto digest = Digest::Parse("sha256:" + std::string(key));
      auto row = Row::Parse(std::string(value));
      if (!digest.ok() || !row.ok()) {
        bad = Corruption("chunk reference row " + std::string(key) + " does not parse");
        return false;
      }
      if (row->deleting_since_ms == 0) rows.emplace_back(*digest, *row);
      return true;
    }));
    DS_RETURN_IF_ERROR(bad);
    for (const auto& [digest, row] : rows) DS_RETURN_IF_ERROR(fn(digest, row.refs, row.size));
    return OkStatus();
  }

  Status Ping() override { return s3_->Head("").status(); }

  Status PutUnverified(const Digest& digest, std::string_view bytes) override {
    const std::string hex = digest.Hex();
    for (;;) {
      DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(hex));
      if (raw) {
        DS_RETURN_IF_ERROR(Change(hex, [&](Row* r) { r->size = bytes.size(); }));
        break;
      }
      MetaBatch batch;
      batch.Expect(kRefs, hex, std::nullopt);
      batch.Put(kRefs, hex, Row{1, bytes.size(), 0, 0}.Encode());
      Status s = meta_->Commit(batch);
      if (s.reason() != Reason::kCommitConflict) {
        DS_RETURN_IF_ERROR(s);
        break;
      }
    }
    return s3_->Put(Key(hex), bytes);
  }

 private:
  // Uploads the chunk's object, then records its size and clears the row's uploading mark. Returns true.
  StatusOr<bool> Upload(const std::string& hex, std::string_view bytes) {
    DS_RETURN_IF_ERROR(s3_->Put(Key(hex), bytes));
    DS_RETURN_IF_ERROR(Change(hex, [&](Row* r) {
      r->uploading_since_ms = 0;
      r->size = bytes.size();
    }));
    return true;
  }

  // After counting a reference to a chunk that has a row: waits while the Put that made the row
  // uploads; then uploads the object itself unless S3 holds it intact (the size of `bytes` and the
  // sha256 that S3Client::Put recorded in its metadata: a missing, torn or replaced object is written
  // again). Returns whether it uploaded.
  StatusOr<bool> EnsureObject(const std::string& hex, std::string_view bytes) {
    Row row;
    for (;;) {
      DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(hex));
      if (!raw) return NotFound("chunk sha256:" + hex + " vanished while referenced");
      DS_ASSIGN_OR_RETURN(row, Row::Parse(*raw));
      if (row.uploading_since_ms == 0 || NowMs() - row.uploading_since_ms > kUploadWaitMs) break;
      std::this_thread::sleep_for(kPoll);
    }
    DS_ASSIGN_OR_RETURN(auto object, s3_->Head(Key(hex)));
    if (!object || object->size != bytes.size() || object->sha256 != hex) return Upload(hex, bytes);
    if (row.uploading_since_ms > 0 || row.size != bytes.size()) {  // its uploader died after the PUT
      DS_RETURN_IF_ERROR(Change(hex, [&](Row* r) {
        r->uploading_since_ms = 0;
        r->size = bytes.size();
      }));
    }
    return false;
  }

  // Marks the row (read as `raw`) as being deleted, deletes the object, then the row. False when
  // another writer changed the row first (a reference counted, another deleter), or when the mark
  // could not be followed by the DELETE soon enough to be sure no one took it over.
  StatusOr<bool> TakeOverDeletion(const std::string& hex, const std::string& raw, Row row) {
    const int64_t mark_ms = NowMs();
    row.deleting_since_ms = mark_ms;
    const std::string marked = row.Encode();
    MetaBatch mark;
    mark.Expect(kRefs, hex, raw);
    mark.Put(kRefs, hex, marked);
    Status s = meta_->Commit(mark);
    if (s.reason() == Reason::kCommitConflict) return false;
    DS_RETURN_IF_ERROR(s);
    // Until the mark is lease_ms_ old nobody else deletes this object; this DELETE starts well within.
    if (NowMs() - mark_ms > kStartDeleteWithinMs) return false;
    DS_RETURN_IF_ERROR(s3_->Delete(Key(hex)));
    MetaBatch done;
    done.Expect(kRefs, hex, marked);
    done.Delete(kRefs, hex);
    s = meta_->Commit(done);
    if (s.reason() == Reason::kCommitConflict) return false;
    DS_RETURN_IF_ERROR(s);
    return true;
  }

  std::string Key(const std::string& hex) const { return "chunks/" + hex.substr(0, 2) + "/" + hex; }

  StatusOr<std::optional<std::string>> ReadRaw(const std::string& hex) { return meta_->Find(kRefs, hex); }

  // Read, change, commit conditionally; again when another writer came first. NotFound when the row
  // is absent or being deleted.
  Status Change(const std::string& hex, const std::function<void(Row*)>& change) {
    for (;;) {
      DS_ASSIGN_OR_RETURN(auto raw, ReadRaw(hex));
      if (!raw) return NotFound("chunk sha256:" + hex);
      DS_ASSIGN_OR_RETURN(Row row, Row::Parse(*raw));
      if (row.deleting_since_ms > 0) return NotFound("chunk sha256:" + hex + " (being deleted)");
      change(&row);
      MetaBatch batch;
      batch.Expect(kRefs, hex, *raw);
      batch.Put(kRefs, hex, row.Encode());
      Status s = meta_->Commit(batch);
      if (s.reason() != Reason::kCommitConflict) return s;
    }
  }

  std::unique_ptr<S3Client> s3_;
  std::shared_ptr<MetaStore> meta_;
  const int64_t lease_ms_;  // a deletion mark older than this was left by a node that died
};

}  // namespace

StatusOr<std::unique_ptr<ChunkStore>> OpenS3ChunkStore(const S3Options& options,
                                                       std::shared_ptr<MetaStore> refs) {
  DS_ASSIGN_OR_RETURN(auto client, S3Client::Open(options));
  return std::unique_ptr<ChunkStore>(std::make_unique<S3ChunkStore>(std::move(client), std::move(refs)));
}

}  // namespace deltastore
