// deltastored: the registry server.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"deltastored: a model registry that stores finetunes as compressed deltas"};
  app.fallthrough();  // `deltastored check --data-dir D` takes the server's options too
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "data";
  int threads = 2;
  int workers = 1;
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
  CLI11_PARSE(app, argc, argv);

  if (*check) {
    deltastore::RegistryOptions copts;
    copts.data_dir = data_dir;
    copts.workers = 1;
    copts.recover = false;  // report the store as it is
    auto reg = deltastore::Registry::Open(copts);
    if (!reg.ok()) {
      std::fprintf(stderr, "error: %s\n", reg.status().ToString().c_str());
      return 1;
    }
    auto report = (*reg)->Check(repair);
    if (!report.ok()) {
      std::fprintf(stderr, "error: %s\n", report.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", report->dump(2).c_str());
    return (*report)["ok"].get<bool>() ? 0 : 3;
  }

  deltastore::api::ServerOptions opts;
  opts.threads = threads;
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
  deltastore::api::ApiInfo info{"0.1.0", "loaded on first lossy job"};

  deltastore::api::Server server(deltastore::api::BuildRouter(registry->get(), info), opts);
  if (auto s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("deltastored listening on %s:%u (data %s, compute %s)\n", opts.address.c_str(), server.port(),
              data_dir.c_str(), info.compute_device.c_str());
  std::fflush(stdout);
  server.RunUntilSignal();
  (*registry)->Shutdown();  // running jobs finish; queued ones stay queued for the next start
  std::printf("deltastored stopped\n");
  return 0;
}
