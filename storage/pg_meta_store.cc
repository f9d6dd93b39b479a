// PgMetaStore: the MetaStore on PostgreSQL, for several registry nodes sharing one metadata store.
// One table, ds_meta(ns text, k bytea, v bytea, primary key (ns, k)): bytea keys order bytewise, as
// RocksDB's do, so scans visit keys in the same order on every engine. Each Commit is one SERIALIZABLE
// transaction: expectations are read inside it, so a conditional commit that saw the expected values
// cannot interleave with another writer of those keys; a serialisation failure runs it again after a short
// random pause that grows with each try (PauseBeforeRetry; run again at once, all 20 tries failed once
// under the e2e load test's parallel version jobs on PostgreSQL).
// Layout and its version: docs/metadata_format.md ("On PostgreSQL").
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/backoff.h"
#include "storage/pg_conn.h"
#include "storage/stores.h"

namespace deltastore {

namespace {

constexpr int kLayoutVersion = 1;
constexpr int kCommitAttempts = 20;
constexpr int kScanPage = 256;

std::string_view Column(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
}

Status CheckNamespace(std::string_view ns) {
  if (ns.find('\0') != std::string_view::npos) return InvalidArgument("namespace contains a NUL byte");
  return OkStatus();
}

class PgMetaStore final : public MetaStore {
 public:
  explicit PgMetaStore(std::unique_ptr<PgPool> pool) : pool_(std::move(pool)) {}

  Status CreateSchema() {
    DS_ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
    // Two nodes starting at once must not race on CREATE TABLE: a transaction-scoped advisory lock.
    Status s = conn->Run("BEGIN");
    if (s.ok()) s = conn->Run("SELECT pg_advisory_xact_lock(4249760931)");
    if (s.ok()) {
      s = conn->Run(
          "CREATE TABLE IF NOT EXISTS ds_meta (ns text NOT NULL, k bytea NOT NULL, v bytea NOT NULL, "
          "PRIMARY KEY (ns, k))");
    }
    if (s.ok()) {
      s = conn->Run("CREATE TABLE IF NOT EXISTS ds_layout (name text PRIMARY KEY, version int NOT NULL)");
    }
    if (s.ok()) {
      s = conn->Run("INSERT INTO ds_layout VALUES ('meta', " + std::to_string(kLayoutVersion) +
                    ") ON CONFLICT (name) DO NOTHING");
    }
    std::optional<int> version;
    if (s.ok()) {
      auto r = conn->Exec("SELECT version FROM ds_layout WHERE name = 'meta'", {}, false);
      s = r.status();
      if (s.ok() && PQntuples(r->get()) == 1) version = std::stoi(PQgetvalue(r->get(), 0, 0));
    }
    if (s.ok()) s = conn->Run("COMMIT");
    if (!s.ok()) {
      conn->Abort();
      return s;
    }
    if (version != kLayoutVersion) {
      return SchemaTooNew("the PostgreSQL metadata tables have layout version " +
                          (version ? std::to_string(*version) : std::string("(none)")) +
                          "; this deltastored reads version " + std::to_string(kLayoutVersion));
    }
    return OkStatus();
  }

  StatusOr<std::string> Get(std::string_view ns, std::string_view key) override {
    DS_RETURN_IF_ERROR(CheckNamespace(ns));
    auto r = Query("SELECT v FROM ds_meta WHERE ns = $1 AND k = $2", {ns, key});
    if (!r.ok()) return r.status();
    if (PQntuples(r->get()) == 0) return NotFound(std::string(ns) + "/" + std::string(key));
    return std::string(Column(r->get(), 0, 0));
  }

  Status Commit(const MetaBatch& batch) override {
    if (batch.empty()) return OkStatus();
    for (const auto& op : batch.ops) DS_RETURN_IF_ERROR(CheckNamespace(op.ns));
    for (const auto& e : batch.expects) DS_RETURN_IF_ERROR(CheckNamespace(e.ns));
    // Later ops of a batch win: reduce it to one final state per key.
    std::map<std::pair<std::string, std::string>, std::optional<std::string>> final_state;
    for (const auto& op : batch.ops) {
      final_state[{op.ns, op.key}] = op.put ? std::optional<std::string>(op.value) : std::nullopt;
    }
    Status s;
    for (int attempt = 0; attempt < kCommitAttempts; ++attempt) {
      std::string changed;  // an expectation that did not hold
      s = CommitOnce(batch, final_state, attempt == 0, &changed);
      if (!changed.empty()) return CommitConflict(changed + " changed");
      if (!PgShouldRetry(s)) break;
      if (attempt + 1 < kCommitAttempts)
        PauseBeforeRetry(attempt, std::chrono::microseconds(200), std::chrono::microseconds(500));
    }
    return s;
  }

  Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) override {
    DS_RETURN_IF_ERROR(CheckNamespace(ns));
    // Page by page, each page copied out before the visitor runs (it may call back into the store).
    std::string after(start_after);
    bool inclusive = start_after.empty() || start_after < prefix;
    if (inclusive) after = std::string(prefix);
    for (;;) {
      const std::string sql = std::string("SELECT k, v FROM ds_meta WHERE ns = $1 AND k ") +
                              (inclusive ? ">=" : ">") + " $2 ORDER BY k LIMIT " + std::to_string(kScanPage);
      auto r = Query(sql, {ns, after});
      if (!r.ok()) return r.status();
      const int rows = PQntuples(r->get());
      for (int i = 0; i < rows; ++i) {
        std::string_view k = Column(r->get(), i, 0);
        if (!k.starts_with(prefix)) return OkStatus();
        if (!fn(k, Column(r->get(), i, 1))) return OkStatus();
      }
      if (rows < kScanPage) return OkStatus();
      after = std::string(Column(r->get(), rows - 1, 0));
      inclusive = false;
    }
  }

 private:
  // One read statement; a pooled connection that broke while idle (the server restarted) is replaced
  // once before the failure is reported.
  StatusOr<PgResult> Query(const std::string& sql, const std::vector<std::string_view>& params) {
    for (int attempt = 0;; ++attempt) {
      DS_ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
      auto r = conn->Exec(sql, params);
      if (r.ok() || attempt > 0 || r.status().reason() != Reason::kStoreUnavailable) return r;
    }
  }

  Status CommitOnce(const MetaBatch& batch,
                    const std::map<std::pair<std::string, std::string>, std::optional<std::string>>& state,
                    bool first_attempt, std::string* changed) {
    DS_ASSIGN_OR_RETURN(auto conn, pool_->Acquire());
    Status s = conn->Run("BEGIN ISOLATION LEVEL SERIALIZABLE");
    if (!s.ok() && first_attempt && s.reason() == Reason::kStoreUnavailable) {
      // Nothing was sent yet: a connection that died while idle is replaced once.
      conn.reset();
      DS_ASSIGN_OR_RETURN(conn, pool_->Acquire());
      s = conn->Run("BEGIN ISOLATION LEVEL SERIALIZABLE");
    }
    for (const auto& e : batch.expects) {
      if (!s.ok()) break;
      auto r = conn->Exec("SELECT v FROM ds_meta WHERE ns = $1 AND k = $2", {e.ns, e.key});
      s = r.status();
      if (!s.ok()) break;
      std::optional<std::string> now;
      if (PQntuples(r->get()) == 1) now = std::string(Column(r->get(), 0, 0));
      if (now != e.value) {
        conn->Abort();
        *changed = e.ns + "/" + e.key;
        return OkStatus();
      }
    }
    for (const auto& [key, value] : state) {
      if (!s.ok()) break;
      s = value ? conn->Run(
                      "INSERT INTO ds_meta (ns, k, v) VALUES ($1, $2, $3) "
                      "ON CONFLICT (ns, k) DO UPDATE SET v = EXCLUDED.v",
                      {key.first, key.second, *value})
                : conn->Run("DELETE FROM ds_meta WHERE ns = $1 AND k = $2", {key.first, key.second});
    }
    if (s.ok()) s = conn->Run("COMMIT");
    if (!s.ok()) conn->Abort();
    return s;
  }

  std::unique_ptr<PgPool> pool_;
};

}  // namespace

StatusOr<std::unique_ptr<MetaStore>> OpenPgMetaStore(const PgOptions& options) {
  DS_ASSIGN_OR_RETURN(auto pool, PgPool::Open(options.url, options.max_connections));
  auto store = std::make_unique<PgMetaStore>(std::move(pool));
  DS_RETURN_IF_ERROR(store->CreateSchema());
  return std::unique_ptr<MetaStore>(std::move(store));
}

}  // namespace deltastore
