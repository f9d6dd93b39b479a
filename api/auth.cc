#include "api/auth.h"

#include <openssl/evp.h>

#include "service/registry.h"

namespace deltastore::api {
namespace {

// The token in an Authorization header; empty when there is none.
StatusOr<std::string> Credentials(const Request& req) {
  std::string h = req.Header("authorization");
  if (h.empty()) return std::string();
  auto scheme_is = [&](std::string_view s) {
    if (h.size() <= s.size() || h[s.size()] != ' ') return false;
    for (size_t i = 0; i < s.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(h[i])) != s[i]) return false;
    return true;
  };
  if (scheme_is("bearer")) return h.substr(7);
  if (scheme_is("basic")) {
    std::string b64 = h.substr(6);
    if (b64.size() > 1024 || b64.size() % 4 != 0) return Unauthenticated("malformed Basic credentials");
    std::string raw(b64.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                            reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
    if (n < 0) return Unauthenticated("malformed Basic credentials");
    size_t pad = 0;
    while (pad < 2 && pad < b64.size() && b64[b64.size() - 1 - pad] == '=') ++pad;
    raw.resize(static_cast<size_t>(n) - pad);
    size_t colon = raw.find(':');
    if (colon == std::string::npos) return Unauthenticated("malformed Basic credentials");
    return raw.substr(colon + 1);
  }
  return Unauthenticated("unsupported Authorization scheme (use Bearer)");
}

}  // namespace

Authorizer MakeAuthorizer(Registry* registry, AuthOptions options) {
  return [registry, options](const Request& req, Scope need) -> Status {
    if (need == Scope::kNone || !options.enabled) return OkStatus();
    DS_ASSIGN_OR_RETURN(std::string token, Credentials(req));
    if (token.empty()) {
      if (options.anonymous_read && need == Scope::kRead) return OkStatus();
      return Unauthenticated("this request needs a token with " + std::string(ScopeName(need)) + " scope");
    }
    DS_ASSIGN_OR_RETURN(TokenGrant grant, registry->tokens().Verify(token));
    if (grant.scope < need) {
      return PermissionDenied("token " + grant.id + " has " + std::string(ScopeName(grant.scope)) +
                              " scope; this request needs " + std::string(ScopeName(need)));
    }
    return OkStatus();
  };
}

}  // namespace deltastore::api
