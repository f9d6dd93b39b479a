// SendFileBody (api/send_file.h) on a real loopback TCP connection: a file goes out whole to a client
// that reads; a span whose checksum fails is cut before its last piece; a client that stops reading is
// given up on after the stall timeout.
#include "api/send_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "tests/storage/temp_dir.h"

namespace deltastore::api {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A FileSpan over a file on disk whose Clear(end) answers `verdict` for the last byte.
class TestSpan : public FileSpan {
 public:
  TestSpan(const std::string& path, uint64_t size, Status verdict)
      : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), size_(size), verdict_(std::move(verdict)) {}
  ~TestSpan() override { ::close(fd_); }
  int fd() const override { return fd_; }
  uint64_t size() const override { return size_; }
  Status Clear(uint64_t end) override { return end < size_ ? OkStatus() : verdict_; }

 private:
  int fd_;
  uint64_t size_;
  Status verdict_;
};

struct Outcome {
  bool sent_whole = false;  // SendFileBody's answer
  std::string received;     // what the client read until the server closed
};

// Serves `bytes` with SendFileBody to one client; `read` says whether the client reads while the server
// sends (a client that does not, reads what arrived only after the server gave up).
Outcome Serve(const std::string& bytes, Status verdict, bool read) {
  const TempDir tmp;
  const std::filesystem::path path = tmp.path() / "file";
  std::ofstream(path, std::ios::binary) << bytes;
  TestSpan span(path.string(), bytes.size(), std::move(verdict));
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(ioc);
  client.open(tcp::v4());
  client.set_option(asio::socket_base::receive_buffer_size(16 << 10));
  client.connect(acceptor.local_endpoint());
  boost::beast::tcp_stream server(acceptor.accept());
  Outcome out;
  bool done = false;
  asio::co_spawn(ioc, SendFileBody(server, span, bytes.size(), std::chrono::milliseconds(300)),
                 [&](const std::exception_ptr&, bool sent_whole) {
                   out.sent_whole = sent_whole;
                   server.close();
                   done = true;
                 });
  std::thread reader;
  auto drain = [&] {
    boost::system::error_code ec;
    std::string buf(1 << 16, '\0');
    while (true) {
      const size_t n = client.read_some(asio::buffer(buf), ec);
      if (ec) break;
      out.received.append(buf.data(), n);
    }
  };
  if (read) reader = std::thread(drain);
  ioc.run();
  if (read) reader.join();
  EXPECT_TRUE(done);
  if (!read) drain();
  return out;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + (i >> 12));
  return s;
}

TEST(SendFileTest, AReadingClientGetsTheWholeFile) {
  const std::string bytes = Pattern((size_t{9} << 20) + 7);
  Outcome o = Serve(bytes, OkStatus(), /*read=*/true);
  EXPECT_TRUE(o.sent_whole);
  EXPECT_EQ(o.received, bytes);
}

TEST(SendFileTest, AFailedCheckCutsTheFileBeforeItsLastPiece) {
  const std::string bytes = Pattern((size_t{9} << 20) + 7);
  Outcome o = Serve(bytes, Corruption("damaged"), /*read=*/true);
  EXPECT_FALSE(o.sent_whole);
  EXPECT_EQ(o.received.size(), bytes.size() - (size_t{4} << 20)) << "everything but the last 4 MiB";
  EXPECT_EQ(o.received, bytes.substr(0, o.received.size()));
}

TEST(SendFileTest, AClientThatStopsReadingIsGivenUpOn) {
  const std::string bytes = Pattern(size_t{64} << 20);  // far more than the sockets' buffers hold
  Outcome o = Serve(bytes, OkStatus(), /*read=*/false);
  EXPECT_FALSE(o.sent_whole);
  EXPECT_LT(o.received.size(), bytes.size());
  EXPECT_EQ(o.received, bytes.substr(0, o.received.size()));
}

}  // namespace
}  // namespace deltastore::api
