// ParseS3Url: the s3:// URL of --chunk-store, and the credentials from the environment.
#include <cctype>
#include <cstdlib>
#include <string>

#include "storage/s3_client.h"

namespace deltastore {

namespace {

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
  if (o.bucket.size() < 3 || o.bucket.size() > 63 ||
      o.bucket.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string::npos) {
    return InvalidArgument("bucket name '" + o.bucket + "': 3 to 63 of a-z, 0-9, '.' and '-'");
  }
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

}  // namespace deltastore
