// Fuzzes ContainerFile::Open on a temp file written from the input (the `rebuild` tool and the
// registry's importers open downloaded containers). The trailing sha256 makes almost every mutation
// fail at the end, so when the input's last byte is odd the harness first replaces the last 32 bytes
// by the digest of the rest, which lets mutations reach the checks after it. What opens is then read:
// every chunk record through Get, and, for a version without a base, every file rebuilt from its chunks
// (files whose chunks claim more than kMaxRawSize raw bytes are skipped, as for DecodeChunk).
#include <unistd.h>

#include <cstdio>

#include "common/sha256.h"
#include "fuzz/fuzz_util.h"
#include "service/container.h"
#include "service/ingest.h"

using namespace deltastore;
using deltastore::fuzz::kMaxRawSize;

namespace {

// One file per process, removed at exit (never destroyed, so the exit handler can still read it).
const std::string& TempPath() {
  static const std::string* path = [] {
    const char* dir = std::getenv("TMPDIR");
    auto* p = new std::string(std::string(dir && *dir ? dir : "/tmp") + "/ds_container_fuzz_" +
                              std::to_string(::getpid()) + ".dsc");
    std::atexit([] { std::remove(TempPath().c_str()); });
    return p;
  }();
  return *path;
}

bool Small(const std::vector<ChunkRef>& chunks) {
  for (const auto& c : chunks) {
    if (c.raw_size > kMaxRawSize) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (size >= 32 && (data[size - 1] & 1)) {
    Digest d = Sha256::Of(std::string_view(bytes).substr(0, size - 32));
    bytes.replace(size - 32, 32, d.Raw());
  }
  {
    FILE* f = std::fopen(TempPath().c_str(), "wb");
    DS_FUZZ_CHECK(f != nullptr, "cannot create %s", TempPath().c_str());
    DS_FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), "short write");
    std::fclose(f);
  }
  auto c = ContainerFile::Open(TempPath());
  if (!c.ok()) {
    DS_FUZZ_CHECK(fuzz::IsOneOf(c.status(), {StatusCode::kInvalidArgument, StatusCode::kCorruption}),
                  "unexpected error code: %s", c.status().ToString().c_str());
    return 0;
  }
  ContainerFile& file = **c;
  const Manifest& m = file.manifest();
  DS_FUZZ_CHECK(!m.base || (file.base_manifest() && ManifestDigest(*file.base_manifest()) == *m.base),
                "base manifest does not match the version's base");
  auto stats = file.Stats();
  DS_FUZZ_CHECK(stats.ok(), "Stats fails");
  uint64_t records = 0;
  Status s = file.ForEach([&](const Digest& d, int64_t, uint64_t len) -> Status {
    ++records;
    auto has = file.Has(d);
    DS_FUZZ_CHECK(has.ok() && *has, "indexed chunk is missing");
    auto got = file.Get(d);
    if (got.ok()) {
      DS_FUZZ_CHECK(got->size() == len && Sha256::Of(*got) == d, "Get returns bytes that fail the digest");
    } else {
      DS_FUZZ_CHECK(got.status().code() == StatusCode::kCorruption, "unexpected Get error: %s",
                    got.status().ToString().c_str());
    }
    return OkStatus();
  });
  DS_FUZZ_CHECK(s.ok() && records == stats->chunks, "ForEach visits %llu of %llu chunks",
                (unsigned long long)records, (unsigned long long)stats->chunks);
  DS_FUZZ_CHECK(!file.Put("x").ok(), "a container accepted a Put");

  if (!m.base) {
    ManifestLoader no_loader = [](const Digest& d) -> StatusOr<Manifest> { return NotFound(d.ToString()); };
    VersionReader reader(&file, m, no_loader);
    for (const auto& f : m.files) {
      bool small =
          f.size <= kMaxRawSize && (!f.header || f.header->raw_size <= kMaxRawSize) && Small(f.chunks);
      for (const auto& t : f.tensors) small = small && Small(t.chunks);
      if (!small) continue;
      uint64_t produced = 0;
      Status st = reader.StreamFile(f, 0, f.size, [&](std::string_view piece) {
        produced += piece.size();
        return OkStatus();
      });
      if (st.ok())
        DS_FUZZ_CHECK(produced == f.size, "rebuilt %llu of %llu bytes", (unsigned long long)produced,
                      (unsigned long long)f.size);
    }
  }
  return 0;
}
