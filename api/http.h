// HTTP types the handlers see: a request in, a response out, no sockets. The server (api/server.h) and
// the tests both drive handlers through these.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_span.h"
#include "common/status.h"

namespace deltastore::api {

// Header names are stored lower-case.
using Headers = std::map<std::string, std::string>;

struct Request {
  std::string method;  // "GET", "PUT", ...
  std::string target;  // path and query, as received
  std::string path;    // decoded path without the query
  std::map<std::string, std::string> query;
  Headers headers;
  std::string body;                 // small bodies only (JSON); streamed bodies go through a BodyConsumer
  std::vector<std::string> params;  // path parameters captured by the route
  bool secure = false;              // arrived over TLS (for absolute URLs the answer names)

  std::string Header(std::string_view name) const;
  std::string Query(std::string_view name, const std::string& fallback = "") const;
};

// Produces the next piece of a streamed response body (common/file_span.h).
using BodyProducer = PieceSource;

// A body to serve: its pieces, and the file it is when it is one (Response::file).
using Body = FileBody;

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  // A streamed body: when set, `body` is ignored and `content_length` bytes come from it.
  BodyProducer stream;
  // With `stream`, when the body is a whole file: plain connections send it with sendfile(2) instead.
  std::shared_ptr<FileSpan> file;
  uint64_t content_length = 0;

  // Test helper: the whole body, draining `stream` when set.
  StatusOr<std::string> ReadAll();

  static Response Json(int status, const std::string& json_text);
  // The error envelope {"errors":[{"code","message"}]}; code and HTTP status are the reason's row of
  // common/errors.h.
  static Response Error(const Status& status);
};

// A streamed request body (uploads): pieces arrive in order, then Finish makes the response.
class BodyConsumer {
 public:
  virtual ~BodyConsumer() = default;
  virtual Status Write(std::string_view piece) = 0;
  virtual Response Finish() = 0;
  // The connection ended before the whole body came: keep what was durably written.
  virtual void Abort() {}
};

}  // namespace deltastore::api
