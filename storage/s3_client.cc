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

std::string Decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
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

StatusOr<S3Options> ParseS3Url(std::string_view url) {
  constexpr std::string_view kScheme = "s3://";
  if (!url.starts_with(kScheme)) return InvalidArgument("--chunk-store must be an s3:// URL");
  url.remove_prefix(kScheme.size());
  S3Options o;
  std::string_view query;
  if (size_t q = url.find('?'); q != std::string_view::npos) {
    query = url.substr(q + 1);
    url = url.substr(0, q);
  }
  size_t slash = url.find('/');
  o.bucket = std::string(url.substr(0, slash));
  if (slash != std::string_view::npos) {
    o.prefix = std::string(url.substr(slash + 1));
    if (!o.prefix.empty() && o.prefix.back() != '/') o.prefix += '/';
  }
  if (o.bucket.empty()) return InvalidArgument("the s3:// URL names no bucket");
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    const std::string name(pair.substr(0, eq));
    const std::string value = eq == std::string_view::npos ? "" : Decode(pair.substr(eq + 1));
    if (name == "endpoint") {
      o.endpoint = value;
    } else if (name == "region") {
      o.region = value;
    } else if (name == "path_style") {
      if (value != "true" && value != "false") return InvalidArgument("path_style must be true or false");
      o.path_style = value == "true";
    } else {
      return InvalidArgument("unknown s3:// URL parameter '" + name + "' (endpoint, region, path_style)");
    }
  }
  if (o.endpoint.empty()) {
    o.endpoint = "https://s3." + o.region + ".amazonaws.com";
  }
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  if (!o.endpoint.starts_with("http://") && !o.endpoint.starts_with("https://")) {
    return InvalidArgument("the s3:// URL's endpoint must start with http:// or https://");
  }
  o.access_key = Env("AWS_ACCESS_KEY_ID");
  o.secret_key = Env("AWS_SECRET_ACCESS_KEY");
  o.session_token = Env("AWS_SESSION_TOKEN");
  if (o.access_key.empty() || o.secret_key.empty()) {
    return InvalidArgument("S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  return o;
}

StatusOr<std::unique_ptr<S3Client>> S3Client::Open(const S3Options& options) {
  GlobalInit();
  std::unique_ptr<S3Client> c(new S3Client(options));
  auto bucket = c->Request("HEAD", "", "", "", "checking the bucket");
  if (!bucket.ok()) return bucket.status();
  if (bucket->status == 404) {
    auto made = c->Request("PUT", "", "", "", "creating the bucket");
    if (!made.ok()) return made.status();
    if (made->status != 200) {
      return StoreUnavailable("S3 at " + options.endpoint + " did not create bucket " + options.bucket +
                              " (HTTP " + std::to_string(made->status) + ")");
    }
  } else if (bucket->status == 403) {
    return PermissionDenied("S3 at " + options.endpoint + " refused the credentials of AWS_ACCESS_KEY_ID " +
                            options.access_key + " for bucket " + options.bucket);
  } else if (bucket->status != 200) {
    return StoreUnavailable("S3 at " + options.endpoint + " answered HTTP " + std::to_string(bucket->status) +
                            " for bucket " + options.bucket);
  }
  return c;
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

StatusOr<S3Client::Response> S3Client::RequestOnce(void* handle, std::string_view method,
                                                   const std::string& url, std::string_view body,
                                                   bool* retry) {
  CURL* curl = static_cast<CURL*>(handle);
  curl_easy_reset(curl);
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
  struct curl_slist* headers = nullptr;
  if (!options_.session_token.empty()) {
    headers = curl_slist_append(headers, ("x-amz-security-token: " + options_.session_token).c_str());
  }
  // (No "Expect:" removal header: curl would sign it without sending it.)
  curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method == "PUT") {
    // The payload's sha256 goes into the signature: curl signs with the x-amz-content-sha256 it is
    // given (S3 checks the body against it, so a body changed on the way is refused).
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    headers = curl_slist_append(headers, ("x-amz-content-sha256: " + Sha256::Of(body).Hex()).c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.empty() ? "" : body.data());
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, std::string(method).c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    *retry = true;
    return StoreUnavailable(std::string(curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_off_t length = -1;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (length >= 0) r.content_length = static_cast<uint64_t>(length);
  *retry = r.status >= 500 || r.status == 429;
  return r;
}

StatusOr<S3Client::Response> S3Client::Request(std::string_view method, std::string_view key,
                                               std::string_view query, std::string_view body,
                                               std::string_view what) {
  const std::string url = Url(key, query, key.empty());
  thread_local std::minstd_rand rng(std::random_device{}());
  Status last;
  for (int attempt = 0; attempt < std::max(1, options_.attempts); ++attempt) {
    if (attempt > 0) {
      const int base_ms = 100 << std::min(attempt - 1, 4);  // 100, 200, 400, 800, 1600 ms
      std::this_thread::sleep_for(std::chrono::milliseconds(base_ms / 2 + static_cast<int>(rng() % base_ms)));
    }
    void* curl = Acquire();
    if (!curl) return Internal("curl_easy_init failed");
    bool retry = false;
    auto r = RequestOnce(curl, method, url, body, &retry);
    Return(curl);
    if (!retry) return r;
    last = r.ok() ? Status(StoreUnavailable("HTTP " + std::to_string(r->status))) : r.status();
  }
  return StoreUnavailable("S3 at " + options_.endpoint + ": " + std::string(what) + " " + options_.prefix +
                          std::string(key) + " failed after " + std::to_string(options_.attempts) +
                          " tries: " + last.message());
}

Status S3Client::Put(std::string_view key, std::string_view bytes) {
  DS_ASSIGN_OR_RETURN(Response r, Request("PUT", key, "", bytes, "PUT"));
  if (r.status == 200) return OkStatus();
  if (r.status == 403) return PermissionDenied("S3 refused PUT " + std::string(key) + " (HTTP 403)");
  return IOError("S3 PUT " + std::string(key) + ": HTTP " + std::to_string(r.status));
}

StatusOr<std::string> S3Client::Get(std::string_view key) {
  DS_ASSIGN_OR_RETURN(Response r, Request("GET", key, "", "", "GET"));
  if (r.status == 200) return std::move(r.body);
  if (r.status == 404) return NotFound("object " + std::string(key));
  return IOError("S3 GET " + std::string(key) + ": HTTP " + std::to_string(r.status));
}

StatusOr<std::optional<uint64_t>> S3Client::Head(std::string_view key) {
  DS_ASSIGN_OR_RETURN(Response r, Request("HEAD", key, "", "", "HEAD"));
  if (r.status == 200) return std::optional<uint64_t>(r.content_length.value_or(0));
  if (r.status == 404) return std::optional<uint64_t>();
  return IOError("S3 HEAD " + std::string(key) + ": HTTP " + std::to_string(r.status));
}

Status S3Client::Delete(std::string_view key) {
  DS_ASSIGN_OR_RETURN(Response r, Request("DELETE", key, "", "", "DELETE"));
  if (r.status == 204 || r.status == 200 || r.status == 404) return OkStatus();
  return IOError("S3 DELETE " + std::string(key) + ": HTTP " + std::to_string(r.status));
}

Status S3Client::List(std::string_view prefix,
                      const std::function<void(std::string_view key, uint64_t size)>& fn) {
  std::string token;
  for (;;) {
    // Parameters in sorted order, encoded: SigV4's canonical query string.
    std::string query;
    if (!token.empty()) query += "continuation-token=" + Encode(token, false) + "&";
    query += "list-type=2&prefix=" + Encode(options_.prefix + std::string(prefix), false);
    DS_ASSIGN_OR_RETURN(Response r, Request("GET", "", query, "", "LIST"));
    if (r.status != 200) return IOError("S3 LIST: HTTP " + std::to_string(r.status));
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
    if (token.empty()) return OkStatus();
  }
}

}  // namespace deltastore
