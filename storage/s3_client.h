// A small client of S3-compatible object storage on libcurl: requests signed by curl's own AWS
// Signature V4 (CURLOPT_AWS_SIGV4), connections reused from a bounded pool of easy handles, and
// retries with exponential backoff and jitter on 5xx, 429, timeouts and broken, reset or refused
// connections (never on another 4xx, nor on errors no retry can mend: a malformed URL, a certificate
// refused). After the last try a request fails with STORE_UNAVAILABLE naming the endpoint, the
// operation and the key (never the credentials).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace deltastore {

struct S3Options {
  std::string endpoint;  // http(s)://host:port
  std::string region = "us-east-1";
  std::string bucket;
  std::string prefix;           // prepended to every key ("" or ending in '/')
  bool path_style = true;       // endpoint/bucket/key; false: bucket.host/key
  std::string access_key;       // AWS_ACCESS_KEY_ID
  std::string secret_key;       // AWS_SECRET_ACCESS_KEY
  std::string session_token;    // AWS_SESSION_TOKEN (sent as x-amz-security-token)
  size_t max_connections = 16;  // requests at once (each keeps its connection open between them)
  int attempts = 5;             // tries per request (the pauses between them total at most 2.25 s)
  long timeout_s = 60;          // per try, whole request
  long connect_timeout_s = 5;
  int list_page_size = 1000;  // max-keys of each ListObjectsV2 page

  // The longest one request can take with all its tries and pauses (S3ChunkStore's leases build on it).
  int64_t WorstRequestMs() const;
};

// What HEAD tells of an object.
struct S3Object {
  uint64_t size = 0;
  std::string etag;    // without its quotes
  std::string sha256;  // the x-amz-meta-sha256 that S3Client::Put stores: hex sha256 of the bytes sent
};

// s3://bucket[/prefix]?endpoint=http://host:port[&region=…][&path_style=true|false] (storage/s3_url.cc);
// credentials from the AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN environment
// variables. Without an endpoint: AWS's, https://s3.REGION.amazonaws.com.
StatusOr<S3Options> ParseS3Url(std::string_view url);

class S3Client {
 public:
  // Checks the endpoint and the credentials, and creates the bucket when it is missing: a clear
  // STORE_UNAVAILABLE (unreachable) or DENIED (credentials refused) otherwise.
  static StatusOr<std::unique_ptr<S3Client>> Open(const S3Options& options);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // Keys are relative to the options' prefix. Put stores the sha256 of `bytes` as the object's
  // x-amz-meta-sha256 (and signs it as the payload's hash, so S3 refuses a body changed on the way).
  Status Put(std::string_view key, std::string_view bytes);
  // NotFound when absent.
  StatusOr<std::string> Get(std::string_view key);
  // `length` bytes from `offset` (fewer at the object's end). NotFound when absent, OutOfRange when
  // `offset` is at or past the end.
  StatusOr<std::string> GetRange(std::string_view key, uint64_t offset, uint64_t length);
  // nullopt when absent.
  StatusOr<std::optional<S3Object>> Head(std::string_view key);
  // Deleting an absent object succeeds.
  Status Delete(std::string_view key);
  // Visits the keys under `prefix` (relative to the options' prefix) with their sizes, in key order.
  Status List(std::string_view prefix, const std::function<void(std::string_view key, uint64_t size)>& fn);

  const S3Options& options() const { return options_; }

 private:
  struct Response {
    long status = 0;
    std::string body;
    std::optional<uint64_t> content_length;
    std::string etag, sha256;  // the ETag and x-amz-meta-sha256 headers
  };
  struct Call {  // one request: what it is and what it sends
    std::string_view method;
    std::string_view key = {}, query = {}, body = {}, range = {};
  };
  explicit S3Client(S3Options options) : options_(std::move(options)) {}
  // One request with retries. `key` is relative to the prefix ("" for the bucket); `query` is
  // already sorted and encoded; `range` is a Range header's value or "".
  StatusOr<Response> Request(const Call& call);
  StatusOr<Response> RequestOnce(void* curl, const Call& call, const std::string& url, bool* retry);
  // The error of an answer no request expects, with S3's error code.
  Status Unexpected(const Call& call, const Response& r) const;
  static size_t KeepHeader(char* data, size_t size, size_t n, void* out);  // CURLOPT_HEADERFUNCTION
  std::string Url(std::string_view key, std::string_view query, bool bucket_only) const;
  void* Acquire();
  void Return(void* curl);

  const S3Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<void*> idle_;  // CURL* easy handles, each keeping its connection
  size_t lent_ = 0;          // at most max_connections requests at once
};

}  // namespace deltastore
