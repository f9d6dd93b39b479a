#include "api/byte_ranges.h"

#include <algorithm>
#include <charconv>

namespace deltastore::api {

namespace {

// A decimal number filling all of `s`.
std::optional<uint64_t> Number(std::string_view s) {
  uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.erase(0, 1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

}  // namespace

std::optional<ByteRange> ParseByteRange(const std::string& header, uint64_t size, bool* unsatisfiable) {
  *unsatisfiable = false;
  if (header.rfind("bytes=", 0) != 0 || header.find(',') != std::string::npos) return std::nullopt;
  std::string spec = Trim(header.substr(6));
  size_t dash = spec.find('-');
  if (dash == std::string::npos) return std::nullopt;
  if (dash == 0) {  // suffix: the last n bytes
    auto n = Number(std::string_view(spec).substr(1));
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) {
      *unsatisfiable = true;
      return std::nullopt;
    }
    return ByteRange{size - std::min(*n, size), size};
  }
  auto a = Number(std::string_view(spec).substr(0, dash));
  if (!a) return std::nullopt;
  uint64_t b = size;
  if (dash + 1 < spec.size()) {
    auto last = Number(std::string_view(spec).substr(dash + 1));
    if (!last || *last < *a) return std::nullopt;
    b = *last == UINT64_MAX ? size : std::min(*last + 1, size);
  }
  if (*a >= size) {
    *unsatisfiable = true;
    return std::nullopt;
  }
  return ByteRange{*a, b};
}

bool EtagMatches(const std::string& if_none_match, const std::string& etag) {
  if (if_none_match.empty()) return false;
  if (Trim(if_none_match) == "*") return true;
  size_t pos = 0;
  while (pos <= if_none_match.size()) {
    size_t comma = if_none_match.find(',', pos);
    if (comma == std::string::npos) comma = if_none_match.size();
    std::string item = Trim(if_none_match.substr(pos, comma - pos));
    if (item.rfind("W/", 0) == 0) item = item.substr(2);
    if (item == etag) return true;
    pos = comma + 1;
  }
  return false;
}

Response ServeBytes(const Request& req, Headers headers, uint64_t size, const std::string& etag,
                    const RangeOpener& open) {
  Response r;
  r.headers = std::move(headers);
  r.headers["etag"] = etag;
  r.headers["accept-ranges"] = "bytes";
  if (EtagMatches(req.Header("if-none-match"), etag)) {
    r.status = 304;
    return r;
  }
  bool unsatisfiable = false;
  auto range = ParseByteRange(req.Header("range"), size, &unsatisfiable);
  if (unsatisfiable) {
    Response e =
        Response::Error(RangeNotSatisfiable("range outside of the " + std::to_string(size) + " bytes"));
    e.headers["content-range"] = "bytes */" + std::to_string(size);
    return e;
  }
  ByteRange span{0, size};
  if (range) {
    span = *range;
    r.status = 206;
    r.headers["content-range"] = "bytes " + std::to_string(span.begin) + "-" + std::to_string(span.end - 1) +
                                 "/" + std::to_string(size);
  }
  r.content_length = span.end - span.begin;
  if (r.content_length == 0) {
    r.body.clear();  // an empty body needs no producer
    return r;
  }
  Body body = open(span.begin, span.end);
  r.stream = std::move(body.pieces);
  r.file = std::move(body.file);
  return r;
}

}  // namespace deltastore::api
