// Bearer tokens and scopes through the router (no sockets): every denial, and what each scope allows.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "api/routes.h"
#include "common/sha256.h"
#include "service/registry.h"
#include "tests/api/router_test_util.h"

namespace deltastore::api {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class AuthTest : public RouterTest {
 protected:
  AuthTest() : RouterTest("ds_auth_") {}
  void SetUp() override {
    RouterTest::SetUp();
    Build({true, false});
  }
  void Build(AuthOptions auth) {
    if (reg_)
      router_ = BuildRouter(reg_.get(), {"test"}, auth);
    else
      Open(auth);
  }

  std::string NewToken(Scope scope) {
    auto t = reg_->tokens().Create("test", scope);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return (*t)["token"];
  }
  Response Call(const std::string& method, const std::string& target, const std::string& auth,
                const std::string& body = "") {
    Headers headers;
    if (!auth.empty()) headers["authorization"] = auth;
    return RouterTest::Call(method, target, body, std::move(headers));
  }
  static std::string Code(Response& r) { return ErrorCode(r); }
  static std::string Basic(const std::string& user_pass) {
    std::string out(4 * ((user_pass.size() + 2) / 3), '\0');
    EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                    reinterpret_cast<const unsigned char*>(user_pass.data()),
                    static_cast<int>(user_pass.size()));
    return "Basic " + out;
  }
};

TEST_F(AuthTest, MissingMalformedUnknownAndRevokedTokensAre401) {
  const std::string good = NewToken(Scope::kRead);
  std::string tampered = good;
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  std::string unknown = good;
  unknown[5] = unknown[5] == '0' ? '1' : '0';  // another id
  for (const std::string& auth :
       {std::string(), std::string("Bearer"), std::string("Bearer nope"), "Bearer " + tampered,
        "Bearer " + unknown, "Token " + good, Basic("user"), std::string("Basic !!!!")}) {
    Response r = Call("GET", "/v1/models", auth);
    EXPECT_EQ(r.status, 401) << "'" << auth << "'";
    EXPECT_EQ(Code(r), "UNAUTHORIZED") << auth;
    EXPECT_NE(r.headers["www-authenticate"].find("Bearer realm="), std::string::npos);
  }
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer " + good).status, 200);
  EXPECT_EQ(Call("GET", "/v1/models", "bearer " + good).status, 200);  // scheme is case-insensitive
  std::string id = good.substr(4, 16);
  ASSERT_TRUE(reg_->tokens().Revoke(id).ok());
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer " + good).status, 401);
  EXPECT_EQ(reg_->tokens().Revoke(id).code(), StatusCode::kNotFound);
}

TEST_F(AuthTest, EachScopeAllowsItsRoutesAndIsDeniedTheOthers) {
  const std::string read = "Bearer " + NewToken(Scope::kRead);
  const std::string write = "Bearer " + NewToken(Scope::kWrite);
  const std::string admin = "Bearer " + NewToken(Scope::kAdmin);
  const std::string bytes = "payload";
  const std::string upload = "/v1/uploads?digest=" + Sha256::Of(bytes).ToString();

  // Health is open to all.
  EXPECT_EQ(Call("GET", "/healthz", "").status, 200);
  EXPECT_EQ(Call("GET", "/readyz", "").status, 200);

  // read: reads only.
  EXPECT_EQ(Call("GET", "/v1/models", read).status, 200);
  Response r = Call("POST", upload, read, bytes);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Code(r), "DENIED");
  EXPECT_EQ(Call("DELETE", "/v1/models/m/tags/t", read).status, 403);
  EXPECT_EQ(Call("POST", "/v1/gc", read).status, 403);
  EXPECT_EQ(Call("GET", "/v1/tokens", read).status, 403);

  // write: reads and writes, not admin routes.
  EXPECT_EQ(Call("GET", "/v1/models", write).status, 200);
  EXPECT_EQ(Call("POST", upload, write, bytes).status, 201);
  EXPECT_EQ(Call("POST", "/v1/gc", write).status, 403);
  EXPECT_EQ(Call("POST", "/v1/tokens", write, R"({"scope":"admin"})").status, 403);

  // admin: everything, including tokens and GC.
  EXPECT_EQ(Call("POST", "/v1/gc", admin).status, 200);
  Response made = Call("POST", "/v1/tokens", admin, R"({"name":"ci","scope":"read"})");
  ASSERT_EQ(made.status, 201);
  json t = json::parse(*made.ReadAll());
  EXPECT_EQ(t["scope"], "read");
  EXPECT_FALSE(t.contains("secret_sha256"));
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer " + t["token"].get<std::string>()).status, 200);
  Response list = Call("GET", "/v1/tokens", admin);
  ASSERT_EQ(list.status, 200);
  std::string listed = *list.ReadAll();
  EXPECT_EQ(listed.find("secret"), std::string::npos) << listed;
  EXPECT_EQ(json::parse(listed).size(), 4u);
  EXPECT_EQ(Call("POST", "/v1/tokens", admin, R"({"scope":"root"})").status, 400);
  EXPECT_EQ(Call("DELETE", "/v1/tokens/" + t["id"].get<std::string>(), admin).status, 204);
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer " + t["token"].get<std::string>()).status, 401);
  EXPECT_EQ(Call("DELETE", "/v1/tokens/0000000000000000", admin).status, 404);
}

TEST_F(AuthTest, BasicCredentialsCarryTheTokenForBrowsers) {
  const std::string token = NewToken(Scope::kRead);
  EXPECT_EQ(Call("GET", "/v1/models", Basic("anyone:" + token)).status, 200);
  EXPECT_EQ(Call("GET", "/v1/models", Basic(":" + token)).status, 200);
  EXPECT_EQ(Call("GET", "/v1/models", Basic("anyone:wrong")).status, 401);
}

TEST_F(AuthTest, AnonymousReadOpensReadsOnly) {
  Build({true, true});
  EXPECT_EQ(Call("GET", "/v1/models", "").status, 200);
  Response r = Call("POST", "/v1/uploads", "");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Call("GET", "/v1/tokens", "").status, 401);
  // A bad token is still refused rather than treated as anonymous.
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer dst_nope").status, 401);
}

TEST_F(AuthTest, AuthOffAllowsEverything) {
  Build({false, false});
  EXPECT_EQ(Call("GET", "/v1/models", "").status, 200);
  EXPECT_EQ(Call("POST", "/v1/gc", "").status, 200);
}

TEST_F(AuthTest, OnlyTheSecretsHashIsStored) {
  const std::string token = NewToken(Scope::kAdmin);
  const std::string secret = token.substr(token.rfind('_') + 1);
  ASSERT_EQ(secret.size(), 64u);
  bool seen = false;
  ASSERT_TRUE(reg_->meta()
                  ->Scan("tokens", "", "",
                         [&](std::string_view, std::string_view v) {
                           seen = true;
                           EXPECT_EQ(v.find(secret), std::string_view::npos);
                           EXPECT_NE(v.find(Sha256::Of(secret).Hex()), std::string_view::npos);
                           return true;
                         })
                  .ok());
  EXPECT_TRUE(seen);
}

}  // namespace
}  // namespace deltastore::api
