// Sends a FileSpan (common/file_span.h) on a plain connection with sendfile(2), after the response
// header: the bytes go from the page cache to the socket without a copy through the process.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>

#include "common/file_span.h"

namespace deltastore::api {

// Sends `length` bytes of `file` from its start, asking file.Clear() before the last piece; false when
// the connection must close (the client went away, stalled longer than `stall_timeout`, or the file may
// not be sent whole).
boost::asio::awaitable<bool> SendFileBody(boost::beast::tcp_stream& stream, FileSpan& file, uint64_t length,
                                          std::chrono::steady_clock::duration stall_timeout);

}  // namespace deltastore::api
