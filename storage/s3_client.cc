#include "storage/s3_client.h"

#include "common/sha256.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>
#include <utility>

namespace deltastore {

namespace {

// curl_global_init is not thread-safe: once, before the first handle.
void GlobalInit() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)done;
}

// RFC 3986 unreserved characters stay; everything else is %XX (SigV4's canonical form). '/' stays in
// object keys (`keep_slash`) and is encoded in query values.
std::string Encode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Failures a later try may not meet: the server down, restarting, slow, or the connection broken.
bool Transient(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
  }
}

// The text of the first <tag>…</tag> at or after `from`; npos-safe.
std::string_view XmlValue(std::string_view xml, std::string_view tag, size_t* from) {
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  size_t a = xml.find(open, *from);
  if (a == std::string_view::npos) return {};
  a += open.size();
  size_t b = xml.find(close, a);
  if (b == std::string_view::npos) return {};
  *from = b + close.size();
  return xml.substr(a, b - a);
}

std::string XmlUnescape(std::string_view s) {
  std::string out(s);
  for (auto [from, to] : {std::pair<std::string, std::string>{"&lt;", "<"},
                          {"&gt;", ">"},
                          {"&#34;", "\""},
                          {"&quot;", "\""},
                          {"&#39;", "'"},
                          {"&apos;", "'"},
                          {"&amp;", "&"}}) {
    for (size_t p = out.find(from); p != std::string::npos; p = out.find(from, p + to.size())) {
      out.replace(p, from.size(), to);
    }
  }
  return out;
}

}  // namespace

// Keeps the headers a request needs from the answer (names are case-insensitive).
size_t S3Client::KeepHeader(char* data, size_t size, size_t n, void* out) {
  auto* r = static_cast<Response*>(out);
  std::string_view line(data, size * n);
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) value.remove_prefix(1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.remove_suffix(1);
  if (name == "etag") {
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    r->etag = value;
  } else if (name == "x-amz-meta-sha256") {
    r->sha256 = value;
  }
  return size * n;
}

int64_t S3Options::WorstRequestMs() const {
  int64_t ms = 0;
  for (int attempt = 0; attempt < std::max(1, attempts); ++attempt) {
    if (attempt > 0) ms += 3 * (100 << std::min(attempt - 1, 4)) / 2;  // the longest pause before it
    ms += timeout_s * 1000;
  }
  return ms;
}

StatusOr<std::unique_ptr<S3Client>> S3Client::Open(const S3Options& options) {
  GlobalInit();
  std::unique_ptr<S3Client> c(new S3Client(options));
  const std::string where = "S3 at " + options.endpoint + ", bucket " + options.bucket;
  DS_ASSIGN_OR_RETURN(Response head, c->Request({.method = "HEAD"}));
  long status = head.status;
  std::string doing = "checking the bucket";
  if (status == 404) {
    doing = "creating the bucket";
    DS_ASSIGN_OR_RETURN(Response made, c->Request({.method = "PUT"}));
    status = made.status;
    if (status == 409) {  // another node created it first, or someone else owns it: HEAD tells
      DS_ASSIGN_OR_RETURN(Response again, c->Request({.method = "HEAD"}));
      status = again.status;
    }
  }
  if (status == 200) return c;
  if (status == 403) {
    return PermissionDenied(where + ": access denied " + doing + " with AWS_ACCESS_KEY_ID " +
                            options.access_key +
                            " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy)");
  }
  std::string hint;
  if (status == 301 || status == 400) {
    hint = std::string(" (is the region right, or does the endpoint need path_style=") +
           (options.path_style ? "false" : "true") + "?)";
  }
  return StoreUnavailable(where + ": HTTP " + std::to_string(status) + " " + doing + hint);
}

S3Client::~S3Client() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* S3Client::Acquire() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return lent_ < std::max<size_t>(1, options_.max_connections); });
    ++lent_;
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  void* h = curl_easy_init();
  if (!h) Return(nullptr);
  return h;
}

void S3Client::Return(void* curl) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --lent_;
    if (curl) idle_.push_back(curl);
  }
  cv_.notify_one();
}

std::string S3Client::Url(std::string_view key, std::string_view query, bool bucket_only) const {
  std::string url;
  if (options_.path_style) {
    url = options_.endpoint + "/" + options_.bucket;
  } else {
    const size_t scheme = options_.endpoint.find("://") + 3;
    url = options_.endpoint.substr(0, scheme) + options_.bucket + "." + options_.endpoint.substr(scheme);
  }
  if (!bucket_only) url += "/" + Encode(options_.prefix + std::string(key), true);
  if (!query.empty()) url += "?" + std::string(query);
  return url;
}

StatusOr<S3Client::Response> S3Client::RequestOnce(void* handle, const Call& call, const std::string& url,
                                                   bool* retry) {
  CURL* curl = static_cast<CURL*>(handle);
  curl_easy_reset(curl);  // keeps the connection
  Response r;
  const std::string sigv4 = "aws:amz:" + options_.region + ":s3";
  const std::string userpwd = options_.access_key + ":" + options_.secret_key;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, options_.timeout_s);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, options_.connect_timeout_s);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, KeepHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
  if (!call.range.empty()) curl_easy_setopt(curl, CURLOPT_RANGE, std::string(call.range).c_str());
  // curl signs every header given here (they are sent as given).
  struct curl_slist* headers = nullptr;
  if (!options_.session_token.empty()) {
    headers = curl_slist_append(headers, ("x-amz-security-token: " + options_.session_token).c_str());
  }
  curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
  if (call.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (call.method == "PUT") {
    // The payload's sha256 goes into the signature (S3 checks the body against it) and, for objects,
    // into the object's metadata, where HEAD finds it.
    const std::string sha = Sha256::Of(call.body).Hex();
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    headers = curl_slist_append(headers, ("x-amz-content-sha256: " + sha).c_str());
    if (!call.key.empty()) headers = curl_slist_append(headers, ("x-amz-meta-sha256: " + sha).c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call.body.empty() ? "" : call.body.data());
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
  } else if (call.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, std::string(call.method).c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    *retry = Transient(rc);
    return StoreUnavailable(std::string(curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_off_t length = -1;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (length >= 0) r.content_length = static_cast<uint64_t>(length);
  *retry = r.status >= 500 || r.status == 429;
  return r;
}

StatusOr<S3Client::Response> S3Client::Request(const Call& call) {
  const std::string url = Url(call.key, call.query, call.key.empty());
  thread_local std::minstd_rand rng(std::random_device{}());
  Status last;
  int tries = 0;
  for (bool retry = true; retry && tries < std::max(1, options_.attempts); ++tries) {
    if (tries > 0) {
      const int base_ms = 100 << std::min(tries - 1, 4);  // 100, 200, 400, 800, 1600 ms, +-50 %
      std::this_thread::sleep_for(std::chrono::milliseconds(base_ms / 2 + static_cast<int>(rng() % base_ms)));
    }
    void* curl = Acquire();
    if (!curl) return Internal("curl_easy_init failed");
    retry = false;
    auto r = RequestOnce(curl, call, url, &retry);
    Return(curl);
    if (r.ok() && !retry) return r;
    last = r.ok() ? Status(StoreUnavailable("HTTP " + std::to_string(r->status))) : r.status();
  }
  return StoreUnavailable("S3 at " + options_.endpoint + ": " + std::string(call.method) + " " +
                          options_.bucket + "/" + options_.prefix + std::string(call.key) + " failed after " +
                          std::to_string(tries) + (tries == 1 ? " try: " : " tries: ") + last.message());
}

Status S3Client::Unexpected(const Call& call, const Response& r) const {
  size_t from = 0;
  const std::string code(XmlValue(r.body, "Code", &from));
  const std::string what = "S3 at " + options_.endpoint + ": " + std::string(call.method) + " " +
                           options_.bucket + "/" + options_.prefix + std::string(call.key) + ": HTTP " +
                           std::to_string(r.status) + (code.empty() ? "" : " " + code);
  if (r.status == 403) return PermissionDenied(what);
  return IOError(what);
}

Status S3Client::Put(std::string_view key, std::string_view bytes) {
  const Call call{.method = "PUT", .key = key, .body = bytes};
  DS_ASSIGN_OR_RETURN(Response r, Request(call));
  return r.status == 200 ? OkStatus() : Unexpected(call, r);
}

StatusOr<std::string> S3Client::Get(std::string_view key) {
  const Call call{.method = "GET", .key = key};
  DS_ASSIGN_OR_RETURN(Response r, Request(call));
  if (r.status == 200) return std::move(r.body);
  if (r.status == 404) return NotFound("object " + std::string(key));
  return Unexpected(call, r);
}

StatusOr<std::string> S3Client::GetRange(std::string_view key, uint64_t offset, uint64_t length) {
  if (length == 0) return InvalidArgument("an empty byte range of object " + std::string(key));
  const std::string range = std::to_string(offset) + "-" + std::to_string(offset + length - 1);
  const Call call{.method = "GET", .key = key, .range = range};
  DS_ASSIGN_OR_RETURN(Response r, Request(call));
  if (r.status == 206) return std::move(r.body);
  if (r.status == 200) {  // a server that ignores ranges sends it all
    if (offset >= r.body.size())
      return OutOfRange("offset " + std::to_string(offset) + " of object " + std::string(key));
    return r.body.substr(offset, length);
  }
  if (r.status == 404) return NotFound("object " + std::string(key));
  if (r.status == 416)
    return OutOfRange("offset " + std::to_string(offset) + " of object " + std::string(key));
  return Unexpected(call, r);
}

StatusOr<std::optional<S3Object>> S3Client::Head(std::string_view key) {
  const Call call{.method = "HEAD", .key = key};
  DS_ASSIGN_OR_RETURN(Response r, Request(call));
  if (r.status == 404) return std::optional<S3Object>();
  if (r.status != 200) return Unexpected(call, r);
  return std::optional<S3Object>(S3Object{r.content_length.value_or(0), r.etag, r.sha256});
}

Status S3Client::Delete(std::string_view key) {
  const Call call{.method = "DELETE", .key = key};
  DS_ASSIGN_OR_RETURN(Response r, Request(call));
  if (r.status == 204 || r.status == 200 || r.status == 404) return OkStatus();
  return Unexpected(call, r);
}

Status S3Client::List(std::string_view prefix,
                      const std::function<void(std::string_view key, uint64_t size)>& fn) {
  std::string token;
  for (;;) {
    // Parameters in sorted order, encoded: SigV4's canonical query string.
    std::string query;
    if (!token.empty()) query += "continuation-token=" + Encode(token, false) + "&";
    query += "list-type=2&max-keys=" + std::to_string(std::max(1, options_.list_page_size)) +
             "&prefix=" + Encode(options_.prefix + std::string(prefix), false);
    const Call call{.method = "GET", .query = query};
    DS_ASSIGN_OR_RETURN(Response r, Request(call));
    if (r.status != 200) return Unexpected(call, r);
    size_t pos = 0;
    for (;;) {
      std::string_view contents = XmlValue(r.body, "Contents", &pos);
      if (contents.empty()) break;
      size_t p = 0, q = 0;
      std::string key = XmlUnescape(XmlValue(contents, "Key", &p));
      const uint64_t size = std::strtoull(std::string(XmlValue(contents, "Size", &q)).c_str(), nullptr, 10);
      if (key.starts_with(options_.prefix)) fn(std::string_view(key).substr(options_.prefix.size()), size);
    }
    size_t t = 0;
    if (XmlValue(r.body, "IsTruncated", &t) != "true") return OkStatus();
    t = 0;
    token = XmlUnescape(XmlValue(r.body, "NextContinuationToken", &t));
    if (token.empty())
      return IOError("S3 at " + options_.endpoint + ": a truncated listing without a continuation token");
  }
}

}  // namespace deltastore
