// deltastored: the registry server. It wires the HTTP layer (api/) to the registry (service/) and
// owns the process: options, the offline commands (check, token), signals and the shutdown deadline.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api/metrics.h"
#include "api/routes.h"
#include "api/server.h"
#include "common/allocator.h"
#include "service/compute_device.h"
#include "service/file_cache.h"
#include "service/registry.h"
#include "service/store_copy.h"

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

struct Options {
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "data";
  std::string meta_store, chunk_store;
  std::string to_data_dir, to_meta_store, to_chunk_store;  // `copy`
  std::string node_id;
  double job_lease_s = 30, job_poll_s = 1;
  int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 64u));  // the cores
  int workers = threads;
  size_t max_uploads = 1000;
  std::string file_cache_gb = "auto";
  deltastore::api::AuthOptions auth;
  std::string tls_cert, tls_key;
  int header_timeout_s = 30, body_timeout_s = 120;
  int shutdown_timeout_s = 10;
  bool repair = false;
  std::string token_name, token_scope = "read", token_id;
};

// The data dir opened by an offline command (check, token): no recovery, so the store is seen as it is.
// A running server holds RocksDB's lock; `online` says what to use instead then.
std::unique_ptr<deltastore::Registry> OpenOffline(const Options& options, const char* online) {
  deltastore::RegistryOptions o;
  o.data_dir = options.data_dir;
  o.meta_store = options.meta_store;
  o.chunk_store = options.chunk_store;
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

// The subcommands CLI11 parsed (null when absent).
struct Commands {
  CLI::App* check = nullptr;
  CLI::App* copy = nullptr;
  CLI::App* token = nullptr;
  CLI::App* token_create = nullptr;
  CLI::App* token_list = nullptr;
  CLI::App* token_revoke = nullptr;
};

void AddServerOptions(CLI::App& app, Options& o) {
  app.add_option("--listen", o.listen, "address:port to listen on (port 0 picks one)")->envname("DS_LISTEN");
  app.add_option("--data-dir", o.data_dir, "directory of the embedded RocksDB and spool files")
      ->envname("DS_DATA_DIR");
  app.add_option("--meta-store", o.meta_store,
                 "postgresql://user@host:port/db: metadata on PostgreSQL, shared by several nodes "
                 "(default: the embedded RocksDB under --data-dir)")
      ->envname("DS_META_STORE");
  app.add_option("--chunk-store", o.chunk_store,
                 "s3://bucket/prefix?endpoint=http://host:port[&region=..][&path_style=false]: chunks on "
                 "S3-compatible storage, credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                 "(default: the embedded RocksDB under --data-dir)")
      ->envname("DS_CHUNK_STORE");
  app.add_option("--node-id", o.node_id,
                 "this node's name in job records (default: host name + random suffix)")
      ->envname("DS_NODE_ID");
  app.add_option(
         "--job-lease", o.job_lease_s,
         "seconds a node holds a job without renewing; then another node sharing the store takes it over")
      ->envname("DS_JOB_LEASE")
      ->check(CLI::Range(0.5, 3600.0));
  app.add_option("--job-poll", o.job_poll_s,
                 "seconds between looks for jobs queued by other nodes or left by dead ones")
      ->envname("DS_JOB_POLL")
      ->check(CLI::Range(0.05, 600.0));
  app.add_option("--threads", o.threads, "HTTP threads")->envname("DS_THREADS")->check(CLI::Range(1, 256));
  app.add_option("--workers", o.workers, "compression job threads")
      ->envname("DS_WORKERS")
      ->check(CLI::Range(1, 64));
  app.add_option("--max-open-uploads", o.max_uploads, "open upload sessions allowed")
      ->envname("DS_MAX_OPEN_UPLOADS");
  app.add_option("--file-cache-gb", o.file_cache_gb,
                 "keep the files of lossless versions and rebuilt whole-file downloads under "
                 "--data-dir/file-cache, up to this many GB, for fast repeated downloads (0: off; auto: a "
                 "tenth of the data dir's file system, at most half its free space)")
      ->envname("DS_FILE_CACHE_GB")
      ->check([](const std::string& v) -> std::string {
        if (v == "auto") return "";
        double gb = -1;
        return CLI::detail::lexical_cast(v, gb) && gb >= 0 && gb <= 1e6 ? ""
                                                                        : "must be auto or a number of GB";
      })
      ->capture_default_str();
  app.add_flag("--auth,!--no-auth", o.auth.enabled,
               "require bearer tokens (create one with `deltastored token create`)")
      ->envname("DS_AUTH");
  app.add_flag("--anonymous-read", o.auth.anonymous_read, "with --auth: read routes need no token")
      ->envname("DS_ANONYMOUS_READ");
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain: serve HTTPS (with --tls-key)")
      ->envname("DS_TLS_CERT");
  app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert")->envname("DS_TLS_KEY");
  app.add_option("--header-timeout", o.header_timeout_s,
                 "seconds a client has to send a request's headers (slow clients are cut off)")
      ->envname("DS_HEADER_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  app.add_option("--body-timeout", o.body_timeout_s,
                 "seconds a request or response body may stall before the connection is cut")
      ->envname("DS_BODY_TIMEOUT")
      ->check(CLI::Range(1, 3600));
  app.add_option("--shutdown-timeout", o.shutdown_timeout_s,
                 "seconds requests in flight get after SIGTERM/SIGINT; then they are cut and the "
                 "process exits within about 2 more seconds")
      ->envname("DS_SHUTDOWN_TIMEOUT")
      ->check(CLI::Range(0, 3600));
}

Commands AddCommands(CLI::App& app, Options& o) {
  Commands c;
  c.check = app.add_subcommand("check", "verify every chunk and reference of the data dir, then exit");
  c.check->add_flag("--repair", o.repair, "rewrite reference counts that disagree with the manifests");
  c.copy = app.add_subcommand("copy",
                              "copy the stores (given as for the server) into empty other stores, digests "
                              "unchanged: embedded -> S3 + PostgreSQL or back (every node stopped)");
  c.copy->add_option("--to-data-dir", o.to_data_dir, "destination data dir (for what is embedded there)");
  c.copy->add_option("--to-meta-store", o.to_meta_store, "destination postgresql:// URL (else embedded)");
  c.copy->add_option("--to-chunk-store", o.to_chunk_store, "destination s3:// URL (else embedded)");
  c.token = app.add_subcommand("token", "manage bearer tokens offline (server stopped; online: /v1/tokens)");
  c.token->require_subcommand(1);
  c.token_create = c.token->add_subcommand("create", "create a token and print it (shown only once)");
  c.token_create->add_option("--name", o.token_name, "what the token is for");
  c.token_create->add_option("--scope", o.token_scope, "read, write or admin (each includes the ones before)")
      ->check(CLI::IsMember({"read", "write", "admin"}));
  c.token_list = c.token->add_subcommand("list", "list tokens (never their secrets)");
  c.token_revoke = c.token->add_subcommand("revoke", "revoke a token by id");
  c.token_revoke->add_option("id", o.token_id, "token id (the 16 hex after dst_)")->required();
  return c;
}

int RunTokenCommand(const Options& o, const Commands& c) {
  auto reg = OpenOffline(o, "use POST/GET/DELETE /v1/tokens");
  if (!reg) return 1;
  auto tokens = reg->tokens();
  if (*c.token_create) {
    auto t = tokens.Create(o.token_name, *deltastore::ParseScope(o.token_scope));
    if (!t.ok()) {
      std::fprintf(stderr, "error: %s\n", t.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", (*t)["token"].get<std::string>().c_str());
    std::fprintf(stderr, "token %s (%s scope) created; it is not shown again\n",
                 (*t)["id"].get<std::string>().c_str(), o.token_scope.c_str());
  } else if (*c.token_list) {
    auto l = tokens.List();
    if (!l.ok()) {
      std::fprintf(stderr, "error: %s\n", l.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", l->dump(2).c_str());
  } else if (*c.token_revoke) {
    if (auto st = tokens.Revoke(o.token_id); !st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 1;
    }
    std::fprintf(stderr, "token %s revoked\n", o.token_id.c_str());
  }
  return 0;
}

int RunCheck(const Options& o) {
  auto reg = OpenOffline(o, "stop it first");
  if (!reg) return 1;
  auto report = reg->Check(o.repair);
  if (!report.ok()) {
    std::fprintf(stderr, "error: %s\n", report.status().ToString().c_str());
    return 1;
  }
  std::printf("%s\n", report->dump(2).c_str());
  return (*report)["ok"].get<bool>() ? 0 : 3;
}

int RunCopy(const Options& o) {
  if (o.to_data_dir.empty() && (o.to_meta_store.empty() || o.to_chunk_store.empty())) {
    std::fprintf(
        stderr,
        "error: copy needs --to-data-dir unless both --to-meta-store and --to-chunk-store are given\n");
    return 2;
  }
  auto from = deltastore::OpenStores({o.data_dir + "/db", true, o.meta_store, o.chunk_store});
  if (!from.ok()) {
    std::fprintf(stderr, "error: opening the source: %s\n", from.status().ToString().c_str());
    return 1;
  }
  const std::string to_db = o.to_data_dir.empty() ? "" : o.to_data_dir + "/db";
  auto to = deltastore::OpenStores({to_db, true, o.to_meta_store, o.to_chunk_store});
  if (!to.ok()) {
    std::fprintf(stderr, "error: opening the destination: %s\n", to.status().ToString().c_str());
    return 1;
  }
  auto copied = deltastore::CopyStores(*from, *to, [](const deltastore::CopyStats& s) {
    std::fprintf(stderr, "copy: %llu chunks (%.1f MB), %llu records\n",
                 static_cast<unsigned long long>(s.chunks), static_cast<double>(s.chunk_bytes) / 1e6,
                 static_cast<unsigned long long>(s.records));
  });
  if (!copied.ok()) {
    std::fprintf(stderr, "error: %s\n", copied.status().ToString().c_str());
    return 1;
  }
  std::printf("{\"chunks\": %llu, \"chunk_bytes\": %llu, \"records\": %llu}\n",
              static_cast<unsigned long long>(copied->chunks),
              static_cast<unsigned long long>(copied->chunk_bytes),
              static_cast<unsigned long long>(copied->records));
  return 0;
}

// Ends the process if the shutdown has not finished by `hard_deadline`: a handler stuck in a
// synchronous computation or a job between two cancellation points must not keep a SIGTERM'd server
// alive. Nothing is lost: RocksDB's WAL makes the cut crash-safe, and interrupted jobs are queued
// again at the next start (Registry::Recover).
class ShutdownWatchdog {
 public:
  ShutdownWatchdog(std::chrono::steady_clock::time_point hard_deadline, int timeout_s)
      : thread_([this, hard_deadline, timeout_s] {
          std::unique_lock<std::mutex> lock(mu_);
          if (cv_.wait_until(lock, hard_deadline, [this] { return done_; })) return;
          std::fprintf(stderr,
                       "deltastored: shutdown deadline (%d s) passed while %s; exiting now (jobs cut "
                       "short run again at the next start)\n",
                       timeout_s, phase_.load());
          std::fflush(stderr);
          std::fflush(stdout);
          std::_Exit(kExitShutdownDeadline);
        }) {}
  ~ShutdownWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Phase(const char* what) { phase_ = what; }

  static constexpr int kExitShutdownDeadline = 1;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<const char*> phase_{"requests were still running"};
  std::thread thread_;
};

// Serves until SIGTERM/SIGINT, then stops within the shutdown deadline (README, docs/hardening.md).
int Serve(const Options& o, deltastore::Registry* registry, deltastore::api::Server* server) {
  using Clock = std::chrono::steady_clock;
  int sig = deltastore::api::Server::WaitForSignal();
  const auto deadline = Clock::now() + std::chrono::seconds(o.shutdown_timeout_s);
  constexpr auto kGrace = std::chrono::seconds(1);  // for cut sessions to unwind, then again for jobs
  std::printf("deltastored: signal %d, stopping (requests in flight have %d s)\n", sig, o.shutdown_timeout_s);
  std::fflush(stdout);
  ShutdownWatchdog watchdog(deadline + 2 * kGrace, o.shutdown_timeout_s);
  auto stopped = server->Stop(deadline, kGrace);
  if (stopped.requests_cut > 0)
    std::fprintf(stderr, "deltastored: cut %zu request(s) still in flight at the shutdown deadline\n",
                 stopped.requests_cut);
  if (!stopped.threads_returned) {
    std::fprintf(stderr,
                 "deltastored: a request handler is still running after the shutdown deadline; "
                 "parking jobs, then exiting without waiting for it\n");
  }
  watchdog.Phase(stopped.threads_returned ? "parking running jobs" : "parking jobs (a handler is stuck)");
  registry->Shutdown();  // running jobs park as queued; queued ones stay queued for the next start
  std::printf("deltastored stopped\n");
  std::fflush(stdout);
  std::fflush(stderr);
  // A stuck handler still uses the registry and the server: end without destroying them.
  if (!stopped.threads_returned) std::_Exit(ShutdownWatchdog::kExitShutdownDeadline);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  deltastore::UseServerAllocatorSettings();
  CLI::App app{"deltastored: a model registry that stores finetunes as compressed deltas"};
  app.fallthrough();  // `deltastored check --data-dir D` takes the server's options too
  Options o;
  AddServerOptions(app, o);
  Commands commands = AddCommands(app, o);
  CLI11_PARSE(app, argc, argv);
  if (*commands.token) return RunTokenCommand(o, commands);
  if (*commands.check) return RunCheck(o);
  if (*commands.copy) return RunCopy(o);

  if (o.tls_cert.empty() != o.tls_key.empty()) {
    std::fprintf(stderr, "error: --tls-cert and --tls-key go together\n");
    return 2;
  }
  deltastore::api::ServerOptions opts;
  opts.threads = o.threads;
  opts.tls_cert_file = o.tls_cert;
  opts.tls_key_file = o.tls_key;
  opts.header_timeout = std::chrono::seconds(o.header_timeout_s);
  opts.body_timeout = std::chrono::seconds(o.body_timeout_s);
  if (!SplitListen(o.listen, &opts.address, &opts.port)) {
    std::fprintf(stderr, "error: --listen must be host:port, got '%s'\n", o.listen.c_str());
    return 2;
  }
  deltastore::RegistryOptions ropts;
  ropts.data_dir = o.data_dir;
  ropts.meta_store = o.meta_store;
  ropts.chunk_store = o.chunk_store;
  ropts.node_id = o.node_id;
  ropts.job_lease = std::chrono::milliseconds(static_cast<int64_t>(o.job_lease_s * 1000));
  ropts.job_poll = std::chrono::milliseconds(static_cast<int64_t>(o.job_poll_s * 1000));
  ropts.workers = o.workers;
  ropts.max_open_uploads = o.max_uploads;
  ropts.file_cache_bytes = o.file_cache_gb == "auto"
                               ? deltastore::AutoFileCacheBytes(o.data_dir)
                               : static_cast<uint64_t>(std::stod(o.file_cache_gb) * 1e9);
  auto registry = deltastore::Registry::Open(ropts);
  if (!registry.ok()) {
    std::fprintf(stderr, "error: %s\n", registry.status().ToString().c_str());
    return 1;
  }
  auto metrics = std::make_shared<deltastore::api::Metrics>();
  opts.on_request = [metrics](const deltastore::api::RequestRecord& r) { metrics->Observe(r); };
  deltastore::api::ApiInfo info{"0.1.0"};
  deltastore::api::Server server(deltastore::api::BuildRouter(registry->get(), info, o.auth, metrics), opts);
  if (auto s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("deltastored listening on %s:%u (%s, data %s, file cache %.1f GB, compute %s, auth %s)\n",
              opts.address.c_str(), server.port(), o.tls_cert.empty() ? "http" : "https", o.data_dir.c_str(),
              static_cast<double>(ropts.file_cache_bytes) / 1e9, deltastore::ComputeDeviceName().c_str(),
              !o.auth.enabled         ? "off"
              : o.auth.anonymous_read ? "on, anonymous read"
                                      : "on");
  if (!o.auth.enabled)
    std::fprintf(stderr,
                 "warning: auth is off: anyone who can reach %s can read, write and delete models "
                 "(start with --auth)\n",
                 o.listen.c_str());
  std::fflush(stdout);
  return Serve(o, registry->get(), &server);
}
