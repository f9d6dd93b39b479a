// What the tests of tests/api share: a registry in a fresh temporary directory, the router over it, and
// requests dispatched without sockets (request in, response out).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "api/routes.h"
#include "service/registry.h"

namespace deltastore::api {

// A request as the server hands it to the router (Content-Length set for a body).
inline Request MakeRequest(const std::string& method, const std::string& target, const std::string& body = "",
                           Headers headers = {}) {
  Request req;
  req.method = method;
  req.target = target;
  req.body = body;
  req.headers = std::move(headers);
  if (!req.body.empty()) req.headers.emplace("content-length", std::to_string(req.body.size()));
  EXPECT_TRUE(ParseTarget(target, &req.path, &req.query)) << target;
  return req;
}

// A response body parsed as JSON (discarded when it is not JSON).
inline nlohmann::json BodyJson(Response& r) {
  auto b = r.ReadAll();
  EXPECT_TRUE(b.ok());
  return nlohmann::json::parse(b.ok() ? *b : "", nullptr, false);
}

// The first error code of an error envelope ("" when there is none).
inline std::string ErrorCode(Response& r) {
  nlohmann::json j = BodyJson(r);
  if (j.is_discarded() || !j.contains("errors")) return "";
  return j["errors"][0]["code"].get<std::string>();
}

// A fixture with a registry in dir_ (removed after each test) and the router over it. Subclasses set
// options in options_ before Open(); `prefix` names the temporary directory.
class RouterTest : public ::testing::Test {
 protected:
  explicit RouterTest(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           (prefix_ + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    options_.data_dir = dir_.string();
    options_.sync_writes = false;
  }
  void TearDown() override {
    router_.reset();
    reg_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Opens the registry with options_ and builds the router with `auth`.
  void Open(AuthOptions auth = {}) {
    auto r = Registry::Open(options_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
    router_ = BuildRouter(reg_.get(), {"test"}, auth);
  }
  // Closes and opens the same directory again, as a restart would.
  void Reopen(AuthOptions auth = {}) {
    router_.reset();
    reg_.reset();
    Open(auth);
  }
  Response Call(const std::string& method, const std::string& target, const std::string& body = "",
                Headers headers = {}) {
    Request req = MakeRequest(method, target, body, std::move(headers));
    return router_->Dispatch(req);
  }

  std::string prefix_;
  RegistryOptions options_;
  std::filesystem::path dir_;
  std::unique_ptr<Registry> reg_;
  std::shared_ptr<Router> router_;
};

}  // namespace deltastore::api
