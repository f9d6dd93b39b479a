// A bounded pool of libpq connections to one PostgreSQL database, and the small helpers the PostgreSQL
// stores share: running a statement with binary parameters and turning libpq's failures into Status.
// libpq never throws; every failure here is a Status:
//  - the server cannot be reached, or the connection broke: StoreUnavailable (the connection is dropped
//    from the pool, and the next Acquire connects again, so requests recover when the server is back);
//  - a serialisation failure or deadlock (SQLSTATE 40001, 40P01): CommitConflict, for the caller to
//    run its transaction again (PgShouldRetry);
//  - anything else: Internal, with the server's message.
#pragma once

#include <libpq-fe.h>

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace deltastore {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

class PgPool;

// One connection, borrowed from the pool for one transaction or statement; returned on destruction
// (or dropped, when it broke).
class PgConn {
 public:
  PgConn(PgPool* pool, PGconn* conn) : pool_(pool), conn_(conn) {}
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Runs `sql` with binary parameters; `binary_result` asks for binary columns. Returns the
  // result of a command or query that succeeded; a failed one is a Status (see the file comment).
  StatusOr<PgResult> Exec(std::string_view sql, const std::vector<std::string_view>& params = {},
                          bool binary_result = true);
  // Exec for statements without rows (BEGIN, COMMIT, ...).
  Status Run(std::string_view sql, const std::vector<std::string_view>& params = {});
  // Ends a transaction that failed part-way (ROLLBACK when the connection still works).
  void Abort();

 private:
  Status Failed(const PGresult* r, std::string_view sql);

  PgPool* pool_;
  PGconn* conn_;
  bool broken_ = false;
};

// A failed transaction that may succeed when run again (serialisation failure or deadlock).
bool PgShouldRetry(const Status& s);

class PgPool {
 public:
  // Connects once to check the URL (StoreUnavailable or PermissionDenied with libpq's reason otherwise).
  static StatusOr<std::unique_ptr<PgPool>> Open(const std::string& url, size_t max_connections);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // Waits while `max_connections` are lent out.
  StatusOr<std::unique_ptr<PgConn>> Acquire();
  // "host:port/db", for messages (never the password).
  const std::string& where() const { return where_; }

 private:
  friend class PgConn;
  PgPool(std::string url, size_t max_connections) : url_(std::move(url)), max_(max_connections) {}
  StatusOr<PGconn*> Connect();
  void Return(PGconn* conn, bool broken);

  const std::string url_;
  const size_t max_;
  std::string where_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PGconn*> idle_;
  size_t lent_ = 0;
};

}  // namespace deltastore
