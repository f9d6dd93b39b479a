#include "storage/pg_conn.h"

#include <cstring>
#include <utility>

namespace deltastore {

namespace {

std::string Trimmed(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

PgConn::~PgConn() {
  pool_->Return(conn_, broken_);
}

Status PgConn::Failed(const PGresult* r, std::string_view sql) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    broken_ = true;
    return StoreUnavailable("PostgreSQL at " + pool_->where() + ": " + Trimmed(PQerrorMessage(conn_)));
  }
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const std::string message = Trimmed(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
  if (state && (std::strcmp(state, "40001") == 0 || std::strcmp(state, "40P01") == 0)) {
    return CommitConflict("PostgreSQL: " + message);
  }
  // Class 08 (connection exception), 57P (operator intervention: shutdown), 53 (insufficient resources).
  if (state && (std::strncmp(state, "08", 2) == 0 || std::strncmp(state, "57P", 3) == 0 ||
                std::strncmp(state, "53", 2) == 0)) {
    broken_ = true;
    return StoreUnavailable("PostgreSQL at " + pool_->where() + ": " + message);
  }
  return Internal("PostgreSQL: " + message + " (in: " + std::string(sql.substr(0, 60)) + ")");
}

StatusOr<PgResult> PgConn::Exec(std::string_view sql, const std::vector<std::string_view>& params,
                                bool binary_result) {
  if (broken_) return StoreUnavailable("PostgreSQL at " + pool_->where() + ": connection lost");
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  values.reserve(params.size());
  for (std::string_view p : params) {
    // A zero-length binary value still needs a non-null pointer (null means SQL NULL).
    values.push_back(p.data() ? p.data() : "");
    lengths.push_back(static_cast<int>(p.size()));
    formats.push_back(1);
  }
  const std::string text(sql);
  PgResult r(PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), nullptr, values.data(),
                          lengths.data(), formats.data(), binary_result ? 1 : 0));
  const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
  return Failed(r.get(), sql);
}

Status PgConn::Run(std::string_view sql, const std::vector<std::string_view>& params) {
  return Exec(sql, params).status();
}

void PgConn::Abort() {
  if (!broken_ && PQtransactionStatus(conn_) != PQTRANS_IDLE) (void)Run("ROLLBACK");
}

bool PgShouldRetry(const Status& s) {
  return s.reason() == Reason::kCommitConflict;
}

StatusOr<std::unique_ptr<PgPool>> PgPool::Open(const std::string& url, size_t max_connections) {
  std::unique_ptr<PgPool> pool(new PgPool(url, max_connections == 0 ? 1 : max_connections));
  DS_ASSIGN_OR_RETURN(PGconn * conn, pool->Connect());
  pool->where_ = std::string(PQhost(conn)) + ":" + PQport(conn) + "/" + PQdb(conn);
  pool->idle_.push_back(conn);
  return pool;
}

PgPool::~PgPool() {
  for (PGconn* c : idle_) PQfinish(c);
}

StatusOr<PGconn*> PgPool::Connect() {
  // connect_timeout bounds a server that does not answer; keepalives notice one that went away.
  const char* keys[] = {"dbname", "connect_timeout", "keepalives_idle", "application_name", nullptr};
  const char* values[] = {url_.c_str(), "5", "30", "deltastored", nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn && PQstatus(conn) == CONNECTION_OK) {
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);  // errors are Statuses, not stderr
    return conn;
  }
  std::string message = conn ? Trimmed(PQerrorMessage(conn)) : "out of memory";
  if (conn) PQfinish(conn);
  const std::string where = where_.empty() ? "the --meta-store URL" : where_;
  if (message.find("password authentication failed") != std::string::npos ||
      message.find("no pg_hba.conf entry") != std::string::npos) {
    return PermissionDenied("PostgreSQL refused the credentials of " + where + ": " + message);
  }
  return StoreUnavailable("cannot connect to PostgreSQL at " + where + ": " + message);
}

StatusOr<std::unique_ptr<PgConn>> PgPool::Acquire() {
  PGconn* conn = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || lent_ < max_; });
    if (!idle_.empty()) {
      conn = idle_.back();
      idle_.pop_back();
    }
    ++lent_;
  }
  if (!conn) {
    auto c = Connect();
    if (!c.ok()) {
      Return(nullptr, true);
      return c.status();
    }
    conn = *c;
  }
  return std::make_unique<PgConn>(this, conn);
}

void PgPool::Return(PGconn* conn, bool broken) {
  if (conn && broken) {
    PQfinish(conn);
    conn = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    --lent_;
    if (conn) idle_.push_back(conn);
  }
  cv_.notify_one();
}

}  // namespace deltastore
