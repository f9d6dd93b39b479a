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
  struct StopResult {
    size_t requests_cut = 0;       // requests still in flight at the deadline (their connections closed)
    bool threads_returned = true;  // false: a handler was still running at deadline + grace
  };
  // Stops accepting and lets requests in flight finish until `deadline`; then closes the connections
  // still open and waits for the threads until `deadline` + `grace`. When a thread has not returned
  // by then (a handler stuck in a synchronous computation), the server keeps it: a later Stop waits
  // again, and a process that must end now calls std::_Exit (docs/hardening.md, shutdown).
  StopResult Stop(std::chrono::steady_clock::time_point deadline,
                  std::chrono::milliseconds grace = std::chrono::seconds(1));
  // Stop with a 5 s deadline, then waits for the threads however long they take.
  void Stop();
  // Blocks until SIGINT or SIGTERM arrives; returns the signal.
  static int WaitForSignal();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deltastore::api
