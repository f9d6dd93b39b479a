// A small client of S3-compatible object storage on libcurl: requests signed by curl's own AWS
// Signature V4 (CURLOPT_AWS_SIGV4), connections reused from a bounded pool of easy handles, and
// retries with exponential backoff and jitter on 5xx, 429, timeouts and broken or refused connections
// (never on another 4xx). After the last try a request fails with STORE_UNAVAILABLE naming the
// endpoint and the operation (never the credentials).
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
  int attempts = 5;             // tries per request (the pauses between them total about 3 s)
  long timeout_s = 60;          // per try, whole request
  long connect_timeout_s = 5;
};

// s3://bucket[/prefix]?endpoint=http://host:port[&region=…][&path_style=true|false]; credentials
// from the AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN environment variables.
StatusOr<S3Options> ParseS3Url(std::string_view url);

class S3Client {
 public:
  // Checks the endpoint and the credentials, and creates the bucket when it is missing: a clear
  // STORE_UNAVAILABLE (unreachable) or DENIED (credentials refused) otherwise.
  static StatusOr<std::unique_ptr<S3Client>> Open(const S3Options& options);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  Status Put(std::string_view key, std::string_view bytes);
  // NotFound when absent.
  StatusOr<std::string> Get(std::string_view key);
  // The object's size, or nullopt when absent.
  StatusOr<std::optional<uint64_t>> Head(std::string_view key);
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
  };
  explicit S3Client(S3Options options) : options_(std::move(options)) {}
  // One request with retries. `key` is relative to the prefix; `query` is already sorted and encoded.
  StatusOr<Response> Request(std::string_view method, std::string_view key, std::string_view query,
                             std::string_view body, std::string_view what);
  StatusOr<Response> RequestOnce(void* curl, std::string_view method, const std::string& url,
                                 std::string_view body, bool* retry);
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
