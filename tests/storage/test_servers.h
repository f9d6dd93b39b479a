// Real servers for the tests of one test binary: PostgreSQL (tests/tools/pg_server.sh) and SeaweedFS's
// S3 (tests/tools/s3_server.sh), each started on free ports (picked by the scripts) the first time a test
// asks for it and stopped when the binary exits; each test takes a fresh database or bucket prefix of it.
#pragma once

#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "storage/s3_client.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {

// A TCP port on 127.0.0.1 that nothing listens on now.
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("no free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs a command; returns its first line of output ("" when it failed).
inline std::string RunForLine(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(command.c_str(), "r"), ::pclose);
  if (!p) return "";
  char buf[512];
  std::string line = std::fgets(buf, sizeof(buf), p.get()) ? buf : "";
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return ::pclose(p.release()) == 0 ? line : "";
}

class PgTestServer {
 public:
  static PgTestServer& Get() {
    static PgTestServer server;
    return server;
  }
  ~PgTestServer() { Stop(); }

  // The URL of a new empty database (throws when the server is not there: the test fails).
  std::string FreshDatabase() {
    const std::string name = "t" + std::to_string(++databases_);
    Admin("CREATE DATABASE " + name);
    return url_.substr(0, url_.rfind('/') + 1) + name;
  }
  // A crash (immediate shutdown), and a start again on the same port and data.
  void Kill() { RunForLine(Script() + " kill " + dir_.path().string()); }
  void Start() {
    url_ = RunForLine(Script() + " start " + dir_.path().string());
    if (url_.empty()) throw std::runtime_error("tests/tools/pg_server.sh could not start PostgreSQL");
  }
  void Stop() { RunForLine(Script() + " stop " + dir_.path().string()); }

 private:
  PgTestServer() { Start(); }
  static std::string Script() { return std::string(DS_SOURCE_DIR) + "/tests/tools/pg_server.sh"; }
  void Admin(const std::string& sql) {
    PGconn* c = PQconnectdb(url_.c_str());
    PGresult* r = PQexec(c, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    const std::string error = PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
    if (!ok) throw std::runtime_error(sql + ": " + error);
  }

  TempDir dir_;
  std::string url_;
  int databases_ = 0;
};

class S3TestServer {
 public:
  static S3TestServer& Get() {
    static S3TestServer server;
    return server;
  }
  ~S3TestServer() { Stop(); }

  // Options for a fresh prefix of the test bucket, with the server's test credentials.
  S3Options FreshPrefix() {
    S3Options o;
    o.endpoint = endpoint_;
    o.bucket = "deltastore-test";
    o.prefix = "t" + std::to_string(++prefixes_) + "/";
    o.access_key = "deltastore-test";
    o.secret_key = "deltastore-test-secret";
    o.attempts = 3;
    return o;
  }
  void Kill() { RunForLine(Script() + " kill " + dir_.path().string()); }
  void Start() {
    endpoint_ = RunForLine(Script() + " start " + dir_.path().string());
    if (endpoint_.empty()) throw std::runtime_error("tests/tools/s3_server.sh could not start SeaweedFS");
  }
  void Stop() { RunForLine(Script() + " stop " + dir_.path().string()); }
  const std::string& endpoint() const { return endpoint_; }

 private:
  S3TestServer() { Start(); }
  static std::string Script() { return std::string(DS_SOURCE_DIR) + "/tests/tools/s3_server.sh"; }

  TempDir dir_;
  std::string endpoint_;
  int prefixes_ = 0;
};

}  // namespace deltastore
