#include "service/tokens.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <chrono>
#include <ctime>

#include "common/clock.h"
#include "common/sha256.h"

namespace deltastore {
namespace {

using json = nlohmann::json;

constexpr char kTokens[] = "tokens";
constexpr char kPrefix[] = "dst_";
constexpr size_t kIdBytes = 8, kSecretBytes = 32;

StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1)
    return Internal("the system random generator failed");
  return HexEncode(raw);
}

bool IsHex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

json Public(json record) {
  record.erase("secret_sha256");
  return record;
}

}  // namespace

std::string_view ScopeName(Scope s) {
  switch (s) {
    case Scope::kNone: return "none";
    case Scope::kRead: return "read";
    case Scope::kWrite: return "write";
    case Scope::kAdmin: return "admin";
  }
  return "none";
}

std::optional<Scope> ParseScope(std::string_view name) {
  if (name == "read") return Scope::kRead;
  if (name == "write") return Scope::kWrite;
  if (name == "admin") return Scope::kAdmin;
  return std::nullopt;
}

StatusOr<json> TokenStore::Create(const std::string& name, Scope scope) {
  if (scope == Scope::kNone) return InvalidArgument("a token needs a scope: read, write or admin");
  if (name.size() > 200) return InvalidArgument("token name is longer than 200 bytes");
  DS_ASSIGN_OR_RETURN(std::string id, RandomHex(kIdBytes));
  DS_ASSIGN_OR_RETURN(std::string secret, RandomHex(kSecretBytes));
  json record = {{"id", id},
                 {"name", name},
                 {"scope", ScopeName(scope)},
                 {"created_at", NowIso()},
                 {"secret_sha256", Sha256::Of(secret).Hex()}};
  DS_RETURN_IF_ERROR(meta_->Put(kTokens, id, record.dump()));
  json reply = Public(record);
  reply["token"] = kPrefix + id + "_" + secret;
  return reply;
}

StatusOr<json> TokenStore::List() {
  json out = json::array();
  Status bad = OkStatus();
  DS_RETURN_IF_ERROR(meta_->Scan(kTokens, "", "", [&](std::string_view, std::string_view v) {
    json j = json::parse(v.begin(), v.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      bad = Corruption("token record is not JSON");
      return false;
    }
    out.push_back(Public(std::move(j)));
    return true;
  }));
  DS_RETURN_IF_ERROR(bad);
  std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return a.value("created_at", "") < b.value("created_at", "");
  });
  return out;
}

Status TokenStore::Revoke(const std::string& id) {
  auto rec = meta_->Get(kTokens, id);
  if (!rec.ok()) {
    if (rec.status().code() == StatusCode::kNotFound) return TokenUnknown("no token " + id);
    return rec.status();
  }
  return meta_->Delete(kTokens, id);
}

StatusOr<TokenGrant> TokenStore::Verify(std::string_view token) {
  const size_t prefix = sizeof(kPrefix) - 1;
  if (token.size() != prefix + 2 * kIdBytes + 1 + 2 * kSecretBytes || token.substr(0, prefix) != kPrefix ||
      token[prefix + 2 * kIdBytes] != '_') {
    return Unauthenticated("malformed token");
  }
  std::string_view id = token.substr(prefix, 2 * kIdBytes);
  std::string_view secret = token.substr(prefix + 2 * kIdBytes + 1);
  if (!IsHex(id) || !IsHex(secret)) return Unauthenticated("malformed token");
  auto rec = meta_->Get(kTokens, id);
  if (!rec.ok()) {
    if (rec.status().code() == StatusCode::kNotFound) return Unauthenticated("unknown or revoked token");
    return rec.status();
  }
  json j = json::parse(*rec, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j["secret_sha256"].is_string() || !j["scope"].is_string())
    return Corruption("token record is not JSON");
  const std::string want = j["secret_sha256"].get<std::string>();
  const std::string got = Sha256::Of(secret).Hex();
  if (want.size() != got.size() || CRYPTO_memcmp(want.data(), got.data(), got.size()) != 0)
    return Unauthenticated("unknown or revoked token");
  auto scope = ParseScope(j["scope"].get<std::string>());
  if (!scope) return Corruption("token record has an unknown scope");
  return TokenGrant{std::string(id), j.value("name", ""), *scope};
}

}  // namespace deltastore
