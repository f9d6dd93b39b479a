// Fuzzes ParseManifest: hostile JSON is an error Status, never an exception or a crash; what parses
// serializes canonically, and the canonical form parses back to the same manifest.
#include "codec/manifest.h"
#include "fuzz/fuzz_util.h"

using namespace deltastore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = ParseManifest(text);
  if (!m.ok()) {
    DS_FUZZ_CHECK(m.status().code() == StatusCode::kCorruption, "unexpected error code: %s",
                  m.status().ToString().c_str());
    return 0;
  }
  // Accessors over whatever parsed.
  (void)m->LogicalBytes();
  (void)m->EncodedBytes();
  std::vector<Digest> digests = m->ChunkDigests();
  for (const auto& f : m->files) {
    DS_FUZZ_CHECK(m->FindFile(f.path) != nullptr, "FindFile(%s) fails", f.path.c_str());
    DS_FUZZ_CHECK(f.kind != FileKind::kSafetensors || f.header.has_value(),
                  "safetensors file without header");
    // The pieces add up to the file's size in exact arithmetic (no wrap-around).
    unsigned __int128 total = f.header ? f.header->raw_size : 0;
    for (const auto& t : f.tensors) total += t.size;
    for (const auto& c : f.chunks) total += c.raw_size;
    DS_FUZZ_CHECK(total == f.size, "pieces of %s wrap around its size", f.path.c_str());
    for (const auto& t : f.tensors) {
      if (t.encoding == TensorEncoding::kSameAsBase) continue;
      unsigned __int128 covered = 0;
      for (const auto& c : t.chunks) covered += c.raw_size;
      DS_FUZZ_CHECK(covered == t.size, "chunks of tensor %s wrap around its size", t.name.c_str());
    }
  }

  std::string canonical = SerializeManifest(*m);
  auto again = ParseManifest(canonical);
  DS_FUZZ_CHECK(again.ok(), "canonical form does not parse: %s", again.status().ToString().c_str());
  DS_FUZZ_CHECK(SerializeManifest(*again) == canonical, "serialize(parse(serialize(m))) != serialize(m)");
  DS_FUZZ_CHECK(ManifestDigest(*again) == ManifestDigest(*m), "digest changes across a round trip");
  DS_FUZZ_CHECK(again->mode == m->mode && again->base == m->base && again->files.size() == m->files.size(),
                "manifest fields differ after a round trip");
  DS_FUZZ_CHECK(again->ChunkDigests() == digests, "chunk references differ after a round trip");
  for (size_t i = 0; i < m->files.size(); ++i) {
    const FileEntry& a = m->files[i];
    const FileEntry& b = again->files[i];
    DS_FUZZ_CHECK(a.path == b.path && a.kind == b.kind && a.size == b.size && a.sha256 == b.sha256 &&
                      a.source_sha256 == b.source_sha256 && a.tensors.size() == b.tensors.size() &&
                      a.chunks.size() == b.chunks.size(),
                  "file %zu differs after a round trip", i);
    for (size_t j = 0; j < a.tensors.size(); ++j) {
      const TensorEntry& x = a.tensors[j];
      const TensorEntry& y = b.tensors[j];
      DS_FUZZ_CHECK(x.name == y.name && x.dtype == y.dtype && x.shape == y.shape && x.offset == y.offset &&
                        x.size == y.size && x.sha256 == y.sha256 && x.encoding == y.encoding &&
                        x.chunks.size() == y.chunks.size(),
                    "tensor %s differs after a round trip", x.name.c_str());
    }
  }
  return 0;
}
