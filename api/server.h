// The HTTP server: a listener and one coroutine session per connection on a pool of threads
// (Boost.Beast + Asio). Sessions read headers first, stream request bodies of streaming routes to
// their consumer piece by piece, and stream response bodies from their producer.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/router.h"
#include "common/status.h"

namespace deltastore::api {

// What one answered request did (for metrics): see ServerOptions::on_request.
struct RequestRecord {
  std::string method;
  std::string route;  // the matched route's pattern; "unmatched" when no route matched
  int status = 0;
  uint64_t bytes_in = 0;   // request body bytes read
  uint64_t bytes_out = 0;  // response body bytes (its Content-Length; 0 for HEAD)
  double seconds = 0;      // from the request's header read to its response written
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 8080;  // 0 picks a free port
  int threads = 2;
  uint64_t max_small_body = 1 << 20;  // bodies of non-streaming routes
  std::chrono::seconds header_timeout{30};
  std::chrono::seconds body_timeout{120};  // between body pieces (slowloris guard)
  size_t max_connections = 256;
  std::string tls_cert_file;  // PEM chain; with tls_key_file, every connection is TLS (1.2 or later)
  std::string tls_key_file;
  // Called after each response is written (on a server thread; must be thread-safe and quick).
  std::function<void(const RequestRecord&)> on_request;
};

class Server {
 public:
  Server(std::shared_ptr<const Router> router, ServerOptions options);
  ~Server();

  // Binds and starts the threads; returns once listening.
  Status Start();
  uint16_t port() const;
  // Stops accepting, lets sessions finish their current request, and joins the threads.
  void Stop();
  // Blocks until SIGINT/SIGTERM, then stops.
  void RunUntilSignal();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deltastore::api
