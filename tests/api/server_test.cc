// The server's shutdown deadline over real sockets: Stop(deadline) waits for requests in flight until
// the deadline, cuts them, and reports a handler that is still running afterwards.
#include "api/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>

namespace deltastore::api {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A connected client socket to 127.0.0.1:port that has sent `request`.
int Send(uint16_t port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  return fd;
}

class ServerStopTest : public ::testing::Test {
 protected:
  void Start() {
    ServerOptions o;
    o.port = 0;
    o.threads = 1;
    server_ = std::make_unique<Server>(router_, o);
    ASSERT_TRUE(server_->Start().ok());
  }
  std::shared_ptr<Router> router_ = std::make_shared<Router>();
  std::unique_ptr<Server> server_;
};

TEST_F(ServerStopTest, AHandlerStuckInASynchronousComputationIsReportedAtTheDeadline) {
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  router_->Add(
      "GET", "/stuck",
      [&entered, released](Request&) {
        entered.set_value();
        released.wait();  // stands for a long synchronous computation
        return Response::Json(200, "{}");
      },
      Scope::kNone);
  Start();
  int fd = Send(server_->port(), "GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
  entered.get_future().wait();

  const auto start = Clock::now();
  Server::StopResult r = server_->Stop(start + milliseconds(200), milliseconds(300));
  const auto waited = Clock::now() - start;
  EXPECT_FALSE(r.threads_returned);
  EXPECT_EQ(r.requests_cut, 1u);
  EXPECT_GE(waited, milliseconds(500));  // the deadline, then the grace
  EXPECT_LT(waited, milliseconds(2000));

  // Once the handler returns, its thread does too (the loop is stopped) and a later Stop joins it.
  release.set_value();
  r = server_->Stop(Clock::now() + milliseconds(100), milliseconds(5000));
  EXPECT_TRUE(r.threads_returned);
  EXPECT_EQ(r.requests_cut, 0u);
  server_.reset();
  ::close(fd);
}

TEST_F(ServerStopTest, ARequestWaitingForItsBodyIsCutAtTheDeadline) {
  struct Sink : BodyConsumer {
    Status Write(std::string_view) override { return OkStatus(); }
    Response Finish() override { return Response::Json(200, "{}"); }
  };
  std::promise<void> entered;
  router_->AddStreaming(
      "PUT", "/sink",
      [&entered](Request&) -> StatusOr<std::unique_ptr<BodyConsumer>> {
        entered.set_value();
        return std::unique_ptr<BodyConsumer>(new Sink());
      },
      Scope::kNone);
  Start();
  // Announces a body it never sends: the request waits (asynchronously) for the rest.
  int fd = Send(server_->port(), "PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc");
  entered.get_future().wait();
  const auto start = Clock::now();
  Server::StopResult r = server_->Stop(start + milliseconds(300), milliseconds(1000));
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(r.threads_returned);  // nothing synchronous holds the thread: it returns at the cut
  EXPECT_EQ(r.requests_cut, 1u);
  EXPECT_GE(waited, milliseconds(300));
  EXPECT_LT(waited, milliseconds(1300));
  ::close(fd);
}

TEST_F(ServerStopTest, IdleServerStopsAtOnce) {
  Start();
  const auto start = Clock::now();
  Server::StopResult r = server_->Stop(start + milliseconds(5000));
  EXPECT_TRUE(r.threads_returned);
  EXPECT_EQ(r.requests_cut, 0u);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

}  // namespace
}  // namespace deltastore::api
