// deltastored: the registry server.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "api/metrics.h"
#include "api/routes.h"
#include "api/server.h"
#include "service/registry.h"

namespace {

// host:port, [v6]:port or :port
bool SplitListen(const std::string& listen, std::string* host, uint16_t* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  *host = listen.substr(0, colon);
  if (host->empty()) *host = "0.0.0.0";
  if (host->size() > 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  try {
    int p = std::stoi(listen.substr(colon + 1));
    if (p < 0 || p > 65535) return false;
    *port = static_cast<uint16_t>(p);
  } catch (...) {
    return false;
  }
  return true;
}

// The data dir opened by an offline command (check, token): no recovery, so the store is seen as it is.
// A running server holds RocksDB's lock; `online` says what to use instead then.
std::unique_ptr<deltastore::Registry> OpenOffline(const std::string& data_dir, const char* online) {
  deltastore::RegistryOptions o;
  o.data_dir = data_dir;
  o.workers = 1;
  o.recover = false;
  auto reg = deltastore::Registry::Open(o);
  if (!reg.ok()) {
    std::fprintf(stderr, "error: %s (a running server holds the data dir: %s)\n",
                 reg.status().ToString().c_str(), online);
    return nullptr;
  }
  return std::move(*reg);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"deltastored: a model registry that stores finetunes as compressed deltas"};
  app.fallthrough();  // `deltastored check --data-dir D` takes the server's options too
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "data";
  int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 64u));  // the cores
  int workers = threads;
  size_t max_uploads = 1000;
  app.add_option("--listen", listen, "address:port to listen on (port 0 picks one)")->envname("DS_LISTEN");
  app.add_option("--data-dir", data_dir, "directory of the embedded RocksDB and spool files")
      ->envname("DS_DATA_DIR");
  app.add_option("--threads", threads, "HTTP threads")->envname("DS_THREADS")->check(CLI::Range(1, 256));
  app.add_option("--workers", workers, "compression job threads")
      ->envname("DS_WORKERS")
      ->check(CLI::Range(1, 64));
  app.add_option("--max-open-uploads", max_uploads, "open upload sessions allowed")
      ->envname("DS_MAX_OPEN_UPLOADS");
  deltastore::api::AuthOptions auth;
  app.add_flag("--auth,!--no-auth", auth.enabled,
               "require bearer tokens (create one with `deltastored token create`)")
      ->envname("DS_AUTH");
  app.add_flag("--anonymous-read", auth.anonymous_read, "with --auth: read routes need no token")
      ->envname("DS_ANONYMOUS_READ");
  std::string tls_cert, tls_key;
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve HTTPS (with --tls-key)")
      ->envname("DS_TLS_CERT");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert")->envname("DS_TLS_KEY");
  int header_timeout_s = 30, body_timeout_s = 120;
  app.add_option("--header-timeout", header_timeout_s,
                 "seconds a client has to send a request's headers (slow clients are cut off)")
      ->envname("DS_HEADER_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  app.add_option("--body-timeout", body_timeout_s,
                 "seconds a request or response body may stall before the connection is cut")
      ->envname("DS_BODY_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  bool repair = false;
  auto* check = app.add_subcommand("check", "verify every chunk and reference of the data dir, then exit");
  check->add_flag("--repair", repair, "rewrite reference counts that disagree with the manifests");
  auto* token =
      app.add_subcommand("token", "manage bearer tokens offline (server stopped; online: /v1/tokens)");
  token->require_subcommand(1);
  std::string token_name, token_scope = "read", token_id;
  auto* token_create = token->add_subcommand("create", "create a token and print it (shown only once)");
  token_create->add_option("--name", token_name, "what the token is for");
  token_create->add_option("--scope", token_scope, "read, write or admin (each includes the ones before)")
      ->check(CLI::IsMember({"read", "write", "admin"}));
  auto* token_list = token->add_subcommand("list", "list tokens (never their secrets)");
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token by id");
  token_revoke->add_option("id", token_id, "token id (the 16 hex after dst_)")->required();
  CLI11_PARSE(app, argc, argv);

  if (*token) {
    auto reg = OpenOffline(data_dir, "use POST/GET/DELETE /v1/tokens");
    if (!reg) return 1;
    auto tokens = reg->tokens();
    if (*token_create) {
      auto t = tokens.Create(token_name, *deltastore::ParseScope(token_scope));
      if (!t.ok()) {
        std::fprintf(stderr, "error: %s\n", t.status().ToString().c_str());
        return 1;
      }
      std::printf("%s\n", (*t)["token"].get<std::string>().c_str());
      std::fprintf(stderr, "token %s (%s scope) created; it is not shown again\n",
                   (*t)["id"].get<std::string>().c_str(), token_scope.c_str());
    } else if (*token_list) {
      auto l = tokens.List();
      if (!l.ok()) {
        std::fprintf(stderr, "error: %s\n", l.status().ToString().c_str());
        return 1;
      }
      std::printf("%s\n", l->dump(2).c_str());
    } else if (*token_revoke) {
      if (auto st = tokens.Revoke(token_id); !st.ok()) {
        std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
        return 1;
      }
      std::fprintf(stderr, "token %s revoked\n", token_id.c_str());
    }
    return 0;
  }

  if (*check) {
    auto reg = OpenOffline(data_dir, "stop it first");
    if (!reg) return 1;
    auto report = reg->Check(repair);
    if (!report.ok()) {
      std::fprintf(stderr, "error: %s\n", report.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", report->dump(2).c_str());
    return (*report)["ok"].get<bool>() ? 0 : 3;
  }

  if (tls_cert.empty() != tls_key.empty()) {
    std::fprintf(stderr, "error: --tls-cert and --tls-key go together\n");
    return 2;
  }
  deltastore::api::ServerOptions opts;
  opts.threads = threads;
  opts.tls_cert_file = tls_cert;
  opts.tls_key_file = tls_key;
  opts.header_timeout = std::chrono::seconds(header_timeout_s);
  opts.body_timeout = std::chrono::seconds(body_timeout_s);
  if (!SplitListen(listen, &opts.address, &opts.port)) {
    std::fprintf(stderr, "error: --listen must be host:port, got '%s'\n", listen.c_str());
    return 2;
  }
  deltastore::RegistryOptions ropts;
  ropts.data_dir = data_dir;
  ropts.workers = workers;
  ropts.max_open_uploads = max_uploads;
  auto registry = deltastore::Registry::Open(ropts);
  if (!registry.ok()) {
    std::fprintf(stderr, "error: %s\n", registry.status().ToString().c_str());
    return 1;
  }
  auto metrics = std::make_shared<deltastore::api::Metrics>();
  opts.on_request = [metrics](const deltastore::api::RequestRecord& r) { metrics->Observe(r); };
  deltastore::api::ApiInfo info{"0.1.0", "loaded on first lossy job"};

  deltastore::api::Server server(deltastore::api::BuildRouter(registry->get(), info, auth, metrics), opts);
  if (auto s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("deltastored listening on %s:%u (%s, data %s, compute %s, auth %s)\n", opts.address.c_str(),
              server.port(), tls_cert.empty() ? "http" : "https", data_dir.c_str(),
              info.compute_device.c_str(),
              !auth.enabled         ? "off"
              : auth.anonymous_read ? "on, anonymous read"
                                    : "on");
  if (!auth.enabled)
    std::fprintf(stderr,
                 "warning: auth is off: anyone who can reach %s can read, write and delete models "
                 "(start with --auth)\n",
                 listen.c_str());
  std::fflush(stdout);
  server.RunUntilSignal();
  (*registry)->Shutdown();  // running jobs finish; queued ones stay queued for the next start
  std::printf("deltastored stopped\n");
  return 0;
}
