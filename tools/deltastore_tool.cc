// deltastore-tool: try the codec without the server.
//
//   deltastore-tool pack BASE FINETUNE [--store DIR]   store BASE, then FINETUNE as a lossless delta;
//                                                     print logical/stored bytes and ratios, verify rebuild
//   deltastore-tool rebuild --container C --base F --out DIR   rebuild a version offline
//   deltastore-tool inspect FILE                       list a safetensors file's tensors
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "codec/safetensors.h"
#include "service/container.h"
#include "service/ingest.h"
#include "storage/stores.h"

namespace deltastore {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// Rebuilds every file of a version in memory and checks it against the manifest's sha256.
Status VerifyRebuild(VersionReader* reader) {
  for (const auto& f : reader->manifest().files) {
    DS_RETURN_IF_ERROR(reader->StreamFile(f, 0, f.size, [](std::string_view) { return OkStatus(); }));
  }
  return OkStatus();
}

int Pack(const std::string& base_path, const std::string& ft_path, const std::string& store_dir,
         size_t threads) {
  IngestOptions options;
  options.encode_threads = threads;
  std::shared_ptr<ChunkStore> chunks;
  if (store_dir.empty()) {
    chunks = NewMemoryChunkStore();
  } else {
    auto stores = OpenRocksStores({store_dir, /*sync_writes=*/false});
    if (!stores.ok()) return Fail(stores.status());
    chunks = stores->chunks;
  }
  std::map<Digest, Manifest> manifests;
  ManifestLoader loader = [&](const Digest& d) -> StatusOr<Manifest> {
    auto it = manifests.find(d);
    if (it == manifests.end()) return NotFound("version " + d.ToString());
    return it->second;
  };
  auto name = [](const std::string& p) { return std::filesystem::path(p).filename().string(); };

  IngestStats base_stats;
  auto t0 = std::chrono::steady_clock::now();
  auto base = IngestFiles(chunks.get(), {{base_path, name(base_path)}}, nullptr, options, &base_stats);
  if (!base.ok()) return Fail(base.status());
  double base_s = Seconds(t0);
  Digest base_digest = ManifestDigest(*base);
  manifests[base_digest] = *base;
  VersionReader base_reader(chunks.get(), *base, loader);

  IngestStats ft_stats;
  t0 = std::chrono::steady_clock::now();
  auto ft = IngestFiles(chunks.get(), {{ft_path, name(ft_path)}}, &base_reader, options, &ft_stats);
  if (!ft.ok()) return Fail(ft.status());
  double ft_s = Seconds(t0);
  manifests[ManifestDigest(*ft)] = *ft;

  VersionReader ft_reader(chunks.get(), *ft, loader);
  t0 = std::chrono::steady_clock::now();
  Status verified = VerifyRebuild(&ft_reader);
  double rebuild_s = Seconds(t0);
  if (!verified.ok()) return Fail(verified);

  auto ratio = [](uint64_t a, uint64_t b) {
    return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
  };
  std::printf("%-10s %14s %14s %14s %8s %8s %10s\n", "version", "logical_B", "encoded_B", "new_stored_B",
              "ratio", "dedup_x", "MB/s");
  std::printf("%-10s %14lu %14lu %14lu %7.3fx %7.3fx %10.1f\n", "base",
              (unsigned long)base_stats.logical_bytes, (unsigned long)base_stats.encoded_bytes,
              (unsigned long)base_stats.new_bytes, ratio(base_stats.logical_bytes, base_stats.encoded_bytes),
              ratio(base_stats.logical_bytes, base_stats.new_bytes), base_stats.logical_bytes / 1e6 / base_s);
  std::printf("%-10s %14lu %14lu %14lu %7.3fx %7.3fx %10.1f\n", "finetune",
              (unsigned long)ft_stats.logical_bytes, (unsigned long)ft_stats.encoded_bytes,
              (unsigned long)ft_stats.new_bytes, ratio(ft_stats.logical_bytes, ft_stats.encoded_bytes),
              ratio(ft_stats.logical_bytes, ft_stats.new_bytes), ft_stats.logical_bytes / 1e6 / ft_s);
  std::printf("finetune tensors: %lu delta, %lu same as base, %lu standalone\n",
              (unsigned long)ft_stats.tensors_delta, (unsigned long)ft_stats.tensors_same,
              (unsigned long)ft_stats.tensors_standalone);
  std::printf("rebuild verified (sha256 %s), %.1f MB/s\n", ft->files[0].sha256.Hex().c_str(),
              ft_stats.logical_bytes / 1e6 / rebuild_s);
  return 0;
}

// Rebuilds every file of a downloaded container, given the base checkpoint's files.
int Rebuild(const std::string& container_path, const std::vector<std::string>& base_paths,
            const std::string& out_dir) {
  auto c = ContainerFile::Open(container_path);
  if (!c.ok()) return Fail(c.status());
  const Manifest& m = (*c)->manifest();
  std::unique_ptr<FilesTensorSource> base;
  if (m.base) {
    if (base_paths.empty())
      return Fail(InvalidArgument("this version is a delta: give its base files with --base"));
    auto src = FilesTensorSource::Open(base_paths);
    if (!src.ok()) return Fail(src.status());
    base = std::move(*src);
    // The base files must be exactly the base version's safetensors files.
    for (size_t i = 0; i < base_paths.size(); ++i) {
      bool known = false;
      for (const auto& f : (*c)->base_manifest()->files) known |= f.sha256 == base->file_digests()[i];
      if (!known) {
        return Fail(
            InvalidArgument(base_paths[i] + " is not a file of the base version " + m.base->ToString()));
      }
    }
  }
  VersionReader reader(c->get(), m, nullptr, base.get());
  std::filesystem::create_directories(out_dir);
  for (const auto& f : m.files) {
    auto out = std::filesystem::path(out_dir) / f.path;
    std::filesystem::create_directories(out.parent_path());
    if (Status s = RebuildFile(&reader, f, out.string()); !s.ok()) return Fail(s.Annotate(f.path));
    std::printf("%s  %s (%lu bytes, sha256 verified)\n", f.sha256.Hex().c_str(), out.c_str(),
                (unsigned long)f.size);
  }
  return 0;
}

int Inspect(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  if (!f.ok()) return Fail(f.status().Annotate(path));
  const auto& h = (*f)->header();
  std::printf("%s: %zu tensors, header %zu B, data %lu B\n", path.c_str(), h.tensors.size(),
              h.header_bytes.size(), (unsigned long)h.data_size);
  for (const auto& t : h.tensors) {
    std::string shape;
    for (auto d : t.shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    std::printf("  %-60s %-5s %-16s %12lu\n", t.name.c_str(), std::string(DTypeName(t.dtype)).c_str(),
                shape.c_str(), (unsigned long)t.size());
  }
  return 0;
}

}  // namespace
}  // namespace deltastore

int main(int argc, char** argv) {
  CLI::App app{"deltastore-tool: the deltastore codec without the server"};
  app.require_subcommand(1);
  std::string base, finetune, store, file;
  auto* pack = app.add_subcommand("pack", "store BASE, then FINETUNE as a lossless delta, and report sizes");
  pack->add_option("BASE", base)->required()->check(CLI::ExistingFile);
  pack->add_option("FINETUNE", finetune)->required()->check(CLI::ExistingFile);
  pack->add_option("--store", store, "RocksDB directory (default: in memory)");
  size_t threads = 0;
  pack->add_option("--threads", threads, "chunk encoding threads (default 0: the machine's cores)");
  auto* inspect = app.add_subcommand("inspect", "list the tensors of a safetensors file");
  inspect->add_option("FILE", file)->required()->check(CLI::ExistingFile);
  std::string container, out_dir;
  std::vector<std::string> base_files;
  auto* rebuild =
      app.add_subcommand("rebuild", "rebuild a version from a downloaded delta container and its base files");
  rebuild->add_option("--container", container, "the container (GET .../versions/{ref}/delta)")
      ->required()
      ->check(CLI::ExistingFile);
  rebuild->add_option("--base", base_files, "a safetensors file of the base version (repeat for shards)")
      ->check(CLI::ExistingFile);
  rebuild->add_option("--out", out_dir, "directory for the rebuilt files")->required();
  CLI11_PARSE(app, argc, argv);
  if (*pack) return deltastore::Pack(base, finetune, store, threads);
  if (*rebuild) return deltastore::Rebuild(container, base_files, out_dir);
  if (*inspect) return deltastore::Inspect(file);
  return 1;
}
