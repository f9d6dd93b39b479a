// Routes: method + path pattern -> a plain handler function. Patterns are '/'-separated segments where
// "{name}" captures one segment and a final "{name...}" captures the rest (file paths).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "api/http.h"

namespace deltastore::api {

using Handler = std::function<Response(Request&)>;
// For routes whose body is streamed (uploads): called with the headers; returns the consumer of the
// body or an error response to send instead.
using StreamingHandler = std::function<StatusOr<std::unique_ptr<BodyConsumer>>(Request&)>;

class Router {
 public:
  void Add(std::string method, std::string pattern, Handler handler);
  void AddStreaming(std::string method, std::string pattern, StreamingHandler handler);

  struct Match {
    const Handler* handler = nullptr;
    const StreamingHandler* streaming = nullptr;
    int error_status = 0;                  // 404 (no such path) or 405 (path known, method not)
    const std::string* pattern = nullptr;  // the matched route's pattern (metrics label)
  };
  // Fills req.params from the pattern; HEAD falls back to GET handlers.
  Match Find(Request& req) const;

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
};

// Splits a target into a percent-decoded path and query parameters; false on malformed escapes.
bool ParseTarget(std::string_view target, std::string* path, std::map<std::string, std::string>* query);

}  // namespace deltastore::api
