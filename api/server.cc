#include "api/server.h"

#include "api/send_file.h"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

namespace deltastore::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kPiece = 1 << 20;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <class Body>
void CopyHeaders(const Response& from, http::response<Body>* to) {
  for (const auto& [k, v] : from.headers) to->set(k, v);
}

}  // namespace

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

struct Server::Impl {
  std::shared_ptr<const Router> router;
  ServerOptions options;
  std::optional<asio::ssl::context> tls;  // set when a certificate is configured
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<size_t> connections{0};
  std::atomic<size_t> busy{0};  // sessions between reading a request header and finishing the response
  std::atomic<bool> stopping{false};
  std::mutex threads_mu;  // guards running_threads
  std::condition_variable threads_cv;
  size_t running_threads = 0;  // threads not yet returned from ioc.run()

  void RunThread() {
    ioc.run();
    std::lock_guard<std::mutex> lock(threads_mu);
    --running_threads;
    threads_cv.notify_all();
  }

  asio::awaitable<void> Listen() {
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        continue;
      }
      if (connections >= options.max_connections) {
        // Over the limit: answer 503 and close, so clients back off instead of hanging.
        beast::error_code ignored;
        http::response<http::string_body> res{http::status::service_unavailable, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = R"({"errors":[{"code":"UNAVAILABLE","message":"too many connections"}]})";
        res.prepare_payload();
        http::write(socket, res, ignored);
        socket.close(ignored);
        continue;
      }
      if (tls) {
        asio::co_spawn(asio::make_strand(ioc), TlsSession(beast::tcp_stream(std::move(socket))),
                       asio::detached);
      } else {
        asio::co_spawn(asio::make_strand(ioc), PlainSession(beast::tcp_stream(std::move(socket))),
                       asio::detached);
      }
    }
  }

  asio::awaitable<void> PlainSession(beast::tcp_stream stream) {
    co_await Session(stream);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  asio::awaitable<void> TlsSession(beast::tcp_stream tcp) {
    TlsStream stream(std::move(tcp), *tls);
    beast::get_lowest_layer(stream).expires_after(options.header_timeout);
    auto [ec] =
        co_await stream.async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // not TLS, bad certificate on the client's side, or too slow
    co_await Session(stream);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
    auto [sec] = co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
    (void)sec;
  }

  // A whole file on a plain connection: the header, then sendfile(2). False when the connection must close.
  asio::awaitable<bool> WriteFile(beast::tcp_stream& stream, Response& resp, bool keep_alive) {
    http::response<http::empty_body> h{static_cast<http::status>(resp.status), 11};
    CopyHeaders(resp, &h);
    h.keep_alive(keep_alive);
    h.content_length(resp.content_length);
    http::response_serializer<http::empty_body> sr{h};
    sr.split(true);
    stream.expires_after(options.body_timeout);
    auto [ec, n] = co_await http::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return false;
    stream.expires_never();
    co_return co_await SendFileBody(stream, *resp.file, resp.content_length, options.body_timeout);
  }

  // Returns false when the connection must close.
  template <class Stream>
  asio::awaitable<bool> WriteResponse(Stream& stream, Response& resp, bool head, bool keep_alive) {
    if (!resp.stream || head) {
      http::response<http::string_body> res{static_cast<http::status>(resp.status), 11};
      CopyHeaders(resp, &res);
      res.keep_alive(keep_alive);
      if (head) {
        uint64_t len = resp.stream ? resp.content_length : resp.body.size();
        http::response<http::empty_body> h{static_cast<http::status>(resp.status), 11};
        CopyHeaders(resp, &h);
        h.keep_alive(keep_alive);
        h.content_length(len);
        http::response_serializer<http::empty_body> sr{h};
        sr.split(true);
        auto [ec, n] = co_await http::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
        co_return !ec;
      }
      res.body() = std::move(resp.body);
      res.prepare_payload();
      auto [ec, n] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      co_return !ec;
    }
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      if (resp.file) co_return co_await WriteFile(stream, resp, keep_alive);
    }
    http::response<http::buffer_body> res{static_cast<http::status>(resp.status), 11};
    CopyHeaders(resp, &res);
    res.keep_alive(keep_alive);
    res.content_length(resp.content_length);
    res.body().data = nullptr;
    res.body().more = true;
    http::response_serializer<http::buffer_body> sr{res};
    {
      auto [ec, n] = co_await http::async_write_header(stream, sr, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return false;
    }
    uint64_t sent = 0;
    while (true) {
      auto piece = resp.stream();
      if (!piece.ok()) co_return false;  // headers are out: closing is the only honest signal
      if (piece->empty()) break;
      sent += piece->size();
      if (sent > resp.content_length) co_return false;
      res.body().data = piece->data();
      res.body().size = piece->size();
      res.body().more = true;
      beast::get_lowest_layer(stream).expires_after(options.body_timeout);
      auto [ec, n] = co_await http::async_write(stream, sr, asio::as_tuple(asio::use_awaitable));
      if (ec && ec != http::error::need_buffer) co_return false;
    }
    if (sent != resp.content_length) co_return false;
    res.body().data = nullptr;
    res.body().size = 0;
    res.body().more = false;
    auto [ec, n] = co_await http::async_write(stream, sr, asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }

  // The request loop of one connection, plain or TLS; the caller closes the connection.
  // Over 100 lines on purpose: one coroutine whose locals (parser, buffers, record) live across its
  // co_awaits; split, they would move into a state object that reads no better.
  template <class Stream>
  asio::awaitable<void> Session(Stream& stream) {
    ++connections;
    struct Count {
      std::atomic<size_t>& c;
      ~Count() { --c; }
    } count{connections};
    beast::flat_buffer buffer;
    buffer.reserve(kPiece);  // socket reads of up to a piece, not Beast's 512-byte default
    std::vector<char> piece(kPiece);
    while (!stopping) {
      http::request_parser<http::buffer_body> parser;
      parser.header_limit(64 * 1024);
      parser.body_limit(boost::none);  // limits are the route's business
      beast::get_lowest_layer(stream).expires_after(options.header_timeout);
      auto [ec, n] =
          co_await http::async_read_header(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec) break;  // closed, timed out or malformed
      ++busy;
      const auto started = std::chrono::steady_clock::now();  // metrics (on_request)
      RequestRecord record;
      record.route = "unmatched";
      struct Busy {
        std::atomic<size_t>& b;
        ~Busy() { --b; }
      } busy_guard{busy};

      const auto& hdr = parser.get();
      Request req;
      req.method = std::string(hdr.method_string());
      req.target = std::string(hdr.target());
      req.secure = std::is_same_v<Stream, TlsStream>;
      for (const auto& f : hdr) req.headers[Lower(f.name_string())] = std::string(f.value());
      bool keep_alive = hdr.keep_alive();
      const bool head = req.method == "HEAD";

      Response resp;
      bool body_done = parser.is_done();
      if (!ParseTarget(req.target, &req.path, &req.query)) {
        resp = Response::Error(BadRequest("malformed request target"));
      } else {
        Router::Match match = router->Find(req);
        if (match.pattern) record.route = *match.pattern;
        if (match.error_status != 0) {
          resp = Router::NoMatch(match, req);
        } else if (match.streaming) {
          auto consumer = (*match.streaming)(req);
          if (!consumer.ok()) {
            resp = Response::Error(consumer.status());
          } else {
            Status s;
            while (!parser.is_done() && s.ok()) {
              parser.get().body().data = piece.data();
              parser.get().body().size = piece.size();
              beast::get_lowest_layer(stream).expires_after(options.body_timeout);
              auto [rec, rn] =
                  co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
              if (rec == http::error::need_buffer) rec = {};
              size_t got = piece.size() - parser.get().body().size;
              record.bytes_in += got;
              if (got > 0)
                s = (*consumer)->Write(std::string_view(piece.data(), got));  // even from a failed read
              if (rec) {
                s = ConnectionLost("connection lost during the body: " + rec.message());
                break;
              }
            }
            body_done = parser.is_done();
            if (!body_done) {
              (*consumer)->Abort();
              if (s.reason() == Reason::kConnectionLost) break;
              resp = Response::Error(s);
            } else {
              resp = (*consumer)->Finish();
            }
          }
        } else {
          Status s;
          while (!parser.is_done()) {
            parser.get().body().data = piece.data();
            parser.get().body().size = piece.size();
            beast::get_lowest_layer(stream).expires_after(options.body_timeout);
            auto [rec, rn] =
                co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
            if (rec == http::error::need_buffer) rec = {};
            if (rec) {
              s = ConnectionLost(rec.message());
              break;
            }
            req.body.append(piece.data(), piece.size() - parser.get().body().size);
            if (req.body.size() > options.max_small_body) {
              s = PayloadTooLarge("request body larger than " + std::to_string(options.max_small_body) +
                                  " bytes");
              break;
            }
          }
          record.bytes_in = req.body.size();
          if (s.reason() == Reason::kConnectionLost) break;
          body_done = parser.is_done();
          resp = s.ok() ? (*match.handler)(req) : Response::Error(s);
        }
      }
      if (!body_done) keep_alive = false;  // unread body bytes would be taken for the next request
      resp.headers.emplace("server", "deltastored");
      record.method = req.method;
      record.status = resp.status;
      record.bytes_out = head ? 0 : (resp.stream ? resp.content_length : resp.body.size());
      bool ok = co_await WriteResponse(stream, resp, head, keep_alive);
      if (options.on_request) {
        record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        options.on_request(record);
      }
      if (!ok || !keep_alive) break;
    }
  }
};

Server::Server(std::shared_ptr<const Router> router, ServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->router = std::move(router);
  impl_->options = std::move(options);
}

Server::~Server() {
  Stop();
}

Status Server::Start() {
  if (!impl_->options.tls_cert_file.empty()) {
    try {
      asio::ssl::context ctx(asio::ssl::context::tls_server);
      ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
      ctx.use_certificate_chain_file(impl_->options.tls_cert_file);
      ctx.use_private_key_file(impl_->options.tls_key_file, asio::ssl::context::pem);
      impl_->tls.emplace(std::move(ctx));
    } catch (const boost::system::system_error& e) {
      return InvalidArgument("cannot load TLS certificate " + impl_->options.tls_cert_file + " / key " +
                             impl_->options.tls_key_file + ": " + e.what());
    }
  }
  try {
    auto& acc = impl_->acceptor;
    tcp::endpoint ep(asio::ip::make_address(impl_->options.address), impl_->options.port);
    acc.open(ep.protocol());
    acc.set_option(asio::socket_base::reuse_address(true));
    acc.bind(ep);
    acc.listen(asio::socket_base::max_listen_connections);
  } catch (const boost::system::system_error& e) {
    return Unavailable("cannot listen on " + impl_->options.address + ":" +
                       std::to_string(impl_->options.port) + ": " + e.what());
  }
  asio::co_spawn(impl_->ioc, impl_->Listen(), asio::detached);
  int n = std::max(1, impl_->options.threads);
  impl_->running_threads = static_cast<size_t>(n);
  for (int i = 0; i < n; ++i) impl_->threads.emplace_back([impl = impl_.get()] { impl->RunThread(); });
  return OkStatus();
}

uint16_t Server::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

Server::StopResult Server::Stop(std::chrono::steady_clock::time_point deadline,
                                std::chrono::milliseconds grace) {
  StopResult result;
  Impl& m = *impl_;
  if (m.threads.empty()) return result;
  if (!m.stopping.exchange(true)) {
    asio::post(m.ioc, [&m] {
      beast::error_code ignored;
      m.acceptor.close(ignored);
    });
  }
  // Requests in flight finish until the deadline (idle keep-alive connections are simply closed).
  while (m.busy > 0 && !m.ioc.stopped() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (!m.ioc.stopped()) result.requests_cut = m.busy;
  // Stopping the loop abandons every session at its next suspension point; their sockets close when
  // the io_context goes. A handler in a synchronous computation keeps its thread until it returns.
  m.ioc.stop();
  {
    std::unique_lock<std::mutex> lock(m.threads_mu);
    if (!m.threads_cv.wait_until(lock, deadline + grace, [&m] { return m.running_threads == 0; })) {
      result.threads_returned = false;
      return result;
    }
  }
  for (auto& t : m.threads) t.join();
  m.threads.clear();
  return result;
}

void Server::Stop() {
  if (impl_->threads.empty()) return;
  if (!Stop(std::chrono::steady_clock::now() + std::chrono::seconds(5)).threads_returned) {
    for (auto& t : impl_->threads) t.join();
    impl_->threads.clear();
  }
}

int Server::WaitForSignal() {
  asio::io_context sig_ioc;
  asio::signal_set signals(sig_ioc, SIGINT, SIGTERM);
  int got = 0;
  signals.async_wait([&got](const beast::error_code&, int sig) { got = sig; });
  sig_ioc.run();
  return got;
}

}  // namespace deltastore::api
