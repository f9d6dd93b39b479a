// Serving a known number of bytes under an ETag: conditional requests (If-None-Match), one "bytes="
// Range, 206/416, Content-Length. Used by the Hugging Face resolve route and per-tensor downloads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "api/http.h"

namespace deltastore::api {

struct ByteRange {
  uint64_t begin, end;  // [begin, end)
};

// One "bytes=" range of a `size`-byte body; nullopt when absent or not understood (serve the whole body);
// `unsatisfiable` when it lies outside the body.
std::optional<ByteRange> ParseByteRange(const std::string& header, uint64_t size, bool* unsatisfiable);

// Whether an If-None-Match header matches `etag` (quoted; weak forms compare equal).
bool EtagMatches(const std::string& if_none_match, const std::string& etag);

// Opens the body of the bytes [begin, end): a producer, and the file when it is a whole one.
using RangeOpener = std::function<Body(uint64_t begin, uint64_t end)>;

// The answer to a GET (or HEAD) of a `size`-byte body: 304 when If-None-Match matches `etag`, 416 for a
// range outside the body, 206 with Content-Range for one range, else 200. `headers` go on every answer
// but the 416; `etag` is sent as ETag.
Response ServeBytes(const Request& req, Headers headers, uint64_t size, const std::string& etag,
                    const RangeOpener& open);

}  // namespace deltastore::api
