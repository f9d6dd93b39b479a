#include "api/send_file.h"

#include <sys/sendfile.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>

namespace deltastore::api {

namespace asio = boost::asio;

namespace {

// The last piece waits for FileSpan::Clear; before it, bytes go out as the socket takes them.
constexpr uint64_t kLastPiece = uint64_t{4} << 20;

}  // namespace

asio::awaitable<bool> SendFileBody(boost::beast::tcp_stream& stream, FileSpan& file, uint64_t length,
                                   std::chrono::steady_clock::duration stall_timeout) {
  auto& socket = stream.socket();
  // sendfile must not block the thread: the socket waits for room through the reactor instead.
  boost::system::error_code nb;
  socket.native_non_blocking(true, nb);
  if (nb) co_return false;
  const uint64_t last = length > kLastPiece ? length - kLastPiece : 0;
  bool cleared = false;
  off_t offset = 0;
  while (static_cast<uint64_t>(offset) < length) {
    if (!cleared && static_cast<uint64_t>(offset) >= last) {
      if (!file.Clear(length).ok()) co_return false;
      cleared = true;
    }
    const uint64_t stop = cleared ? length : last;
    const ssize_t n =
        ::sendfile(socket.native_handle(), file.fd(), &offset, stop - static_cast<uint64_t>(offset));
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || errno != EAGAIN) co_return false;  // the file is shorter than it said, or the socket failed
    // The socket's buffer is full. Wait for room by sending the next byte through the stream, whose
    // own timer gives up on a client that stalls.
    char next = 0;
    if (::pread(file.fd(), &next, 1, offset) != 1) co_return false;
    stream.expires_after(stall_timeout);
    auto [ec, sent] =
        co_await stream.async_write_some(asio::buffer(&next, 1), asio::as_tuple(asio::use_awaitable));
    stream.expires_never();
    if (ec || sent != 1) co_return false;
    ++offset;
  }
  co_return true;
}

}  // namespace deltastore::api
