// Bearer tokens with scopes, stored hashed in the meta store (namespace "tokens").
//
// A token reads "dst_<id>_<secret>": <id> (16 hex) names the record, <secret> (64 hex, 256 random bits
// from OpenSSL) is shown once at creation; only sha256(secret) is stored, so a copy of the data dir
// reveals no usable token. Scopes nest: admin includes write, write includes read.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/scope.h"
#include "common/status.h"
#include "storage/meta_store.h"

namespace deltastore {

std::string_view ScopeName(Scope s);
std::optional<Scope> ParseScope(std::string_view name);

struct TokenGrant {
  std::string id;
  std::string name;
  Scope scope = Scope::kNone;  // the highest scope the token holds
};

class TokenStore {
 public:
  explicit TokenStore(MetaStore* meta) : meta_(meta) {}

  // Creates a token; the reply holds the token text (only here) and its record.
  StatusOr<nlohmann::json> Create(const std::string& name, Scope scope);
  // Records without secrets, oldest first.
  StatusOr<nlohmann::json> List();
  // kNotFound when unknown. A revoked token stops working at once.
  Status Revoke(const std::string& id);
  // The grant of a presented token; kUnauthenticated for a malformed, unknown or revoked one.
  StatusOr<TokenGrant> Verify(std::string_view token);

 private:
  MetaStore* meta_;
};

}  // namespace deltastore
