// Routes: method + path pattern -> a plain handler function. Patterns are '/'-separated segments where
// "{name}" captures one segment and a final "{name...}" captures the rest (file paths).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/http.h"
#include "common/scope.h"

namespace deltastore::api {

using Handler = std::function<Response(Request&)>;
// For routes whose body is streamed (uploads): called with the headers; returns the consumer of the
// body or an error response to send instead.
using StreamingHandler = std::function<StatusOr<std::unique_ptr<BodyConsumer>>(Request&)>;

// Decides whether a request may run a route that needs `scope` (kNone: open to all).
using Authorizer = std::function<Status(const Request&, Scope)>;

class Router {
 public:
  Router();
  // A route's scope defaults by method: GET and HEAD need read, the others write.
  void Add(std::string method, std::string pattern, Handler handler, std::optional<Scope> scope = {});
  void AddStreaming(std::string method, std::string pattern, StreamingHandler handler,
                    std::optional<Scope> scope = {});
  // Every route checks it before running (and before a streamed body is read). Unset: all allowed.
  void SetAuthorizer(Authorizer authorizer) { *authorizer_ = std::move(authorizer); }

  struct Match {
    const Handler* handler = nullptr;
    const StreamingHandler* streaming = nullptr;
    int error_status = 0;                  // 404 (no such path) or 405 (path known, method not)
    const std::string* pattern = nullptr;  // the matched route's pattern (metrics label)
    std::string allow;                     // 405: the methods the path serves ("GET, HEAD, PUT")
  };
  // Fills req.params from the pattern; HEAD falls back to GET handlers.
  Match Find(Request& req) const;
  // The answer to a request Find did not match: 404, or 405 with an Allow header.
  static Response NoMatch(const Match& m, const Request& req);

  // Socket-free dispatch for tests and for non-streamed routes.
  Response Dispatch(Request& req) const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    Handler handler;
    StreamingHandler streaming;
  };
  std::vector<Route> routes_;
  std::shared_ptr<Authorizer> authorizer_;
};

// Splits a target into a percent-decoded path and query parameters; false on malformed escapes.
bool ParseTarget(std::string_view target, std::string* path, std::map<std::string, std::string>* query);

}  // namespace deltastore::api
