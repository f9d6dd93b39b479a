// A response body that is a whole open file, which plain HTTP connections send with sendfile(2): its bytes
// go from the page cache to the socket without passing through the process. TLS connections read the
// same bytes piece by piece instead (the producer that comes with it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace deltastore {

class FileSpan {
 public:
  virtual ~FileSpan() = default;
  virtual int fd() const = 0;
  virtual uint64_t size() const = 0;
  // Blocks until the bytes before `end` may go out. A writer calls it before sending bytes at or past
  // each point it chooses, and always before the last byte: the file's checksum is checked by then. An
  // error means the rest may not go out (the connection is closed).
  virtual Status Clear(uint64_t end) = 0;
};

// Produces the next piece of a body; an empty piece is the end. An error after the headers went out can
// only close the connection, so producers verify before they hand out bytes.
using PieceSource = std::function<StatusOr<std::string>()>;

// A body to serve: its pieces, and the open file it is when it is a whole file (sent with sendfile(2) on
// plain connections, read through `pieces` over TLS).
struct FileBody {
  PieceSource pieces;
  std::shared_ptr<FileSpan> file;
};

}  // namespace deltastore
