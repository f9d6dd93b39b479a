#include "codec/manifest.h"

#include <nlohmann/json.hpp>

#include "codec/chunk_codec.h"

namespace deltastore {
namespace {

using json = nlohmann::json;

json ChunkToJson(const ChunkRef& c) {
  return json::array({c.digest.ToString(), c.raw_size, c.stored_size});
}

json ChunksToJson(const std::vector<ChunkRef>& chunks) {
  json a = json::array();
  for (const auto& c : chunks) a.push_back(ChunkToJson(c));
  return a;
}

// Parsing helpers: every access checks the type, so a hostile manifest is an error, not an exception.
Status Bad(const std::string& what) {
  return Corruption("manifest: " + what);
}

StatusOr<uint64_t> U64(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_unsigned())
    return Bad(std::string(key) + " must be an unsigned integer");
  return it->get<uint64_t>();
}
StatusOr<std::string> Str(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return Bad(std::string(key) + " must be a string");
  return it->get<std::string>();
}
StatusOr<Digest> DigestField(const json& obj, const char* key) {
  DS_ASSIGN_OR_RETURN(std::string s, Str(obj, key));
  auto d = Digest::Parse(s);
  if (!d.ok()) return Bad(std::string(key) + " is not a digest");
  return *d;
}
StatusOr<ChunkRef> ParseChunk(const json& j) {
  if (!j.is_array() || j.size() != 3 || !j[0].is_string() || !j[1].is_number_unsigned() ||
      !j[2].is_number_unsigned()) {
    return Bad("chunk reference must be [digest, raw_size, stored_size]");
  }
  auto d = Digest::Parse(j[0].get<std::string>());
  if (!d.ok()) return Bad("chunk digest is malformed");
  return ChunkRef{*d, j[1].get<uint64_t>(), j[2].get<uint64_t>()};
}
StatusOr<std::vector<ChunkRef>> ParseChunks(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return Bad(std::string(key) + " must be an array");
  std::vector<ChunkRef> out;
  for (const auto& c : *it) {
    DS_ASSIGN_OR_RETURN(ChunkRef r, ParseChunk(c));
    out.push_back(r);
  }
  return out;
}

StatusOr<TensorEncoding> ParseEncoding(const std::string& s) {
  if (s == "standalone") return TensorEncoding::kStandalone;
  if (s == "same_as_base") return TensorEncoding::kSameAsBase;
  if (s == "delta") return TensorEncoding::kDelta;
  if (s == "lossy") return TensorEncoding::kLossy;
  return Bad("unknown tensor encoding " + s);
}

StatusOr<TensorEntry> ParseTensor(const json& j) {
  if (!j.is_object()) return Bad("tensor entry must be an object");
  TensorEntry t;
  DS_ASSIGN_OR_RETURN(t.name, Str(j, "name"));
  DS_ASSIGN_OR_RETURN(std::string dtype, Str(j, "dtype"));
  auto dt = ParseDType(dtype);
  if (!dt) return Bad("unknown dtype " + dtype);
  t.dtype = *dt;
  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) return Bad("shape must be an array");
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned()) return Bad("shape entries must be unsigned");
    t.shape.push_back(d.get<uint64_t>());
  }
  DS_ASSIGN_OR_RETURN(t.offset, U64(j, "offset"));
  DS_ASSIGN_OR_RETURN(t.size, U64(j, "size"));
  DS_ASSIGN_OR_RETURN(t.sha256, DigestField(j, "sha256"));
  DS_ASSIGN_OR_RETURN(std::string enc, Str(j, "encoding"));
  DS_ASSIGN_OR_RETURN(t.encoding, ParseEncoding(enc));
  DS_ASSIGN_OR_RETURN(t.chunks, ParseChunks(j, "chunks"));
  // Readers allocate a chunk's raw size before decoding it: bound it by the format (a lossy tensor is
  // one chunk, bounded by its base tensor when decoded).
  uint64_t covered = 0;
  for (const auto& c : t.chunks) {
    if ((t.encoding != TensorEncoding::kLossy && c.raw_size > kChunkSize) || c.raw_size > t.size - covered) {
      return Bad("chunks of tensor " + t.name + " have bad sizes");
    }
    covered += c.raw_size;
  }
  if (t.encoding != TensorEncoding::kSameAsBase && covered != t.size) {
    return Bad("chunks of tensor " + t.name + " do not cover its size");
  }
  return t;
}

StatusOr<FileEntry> ParseFile(const json& j) {
  if (!j.is_object()) return Bad("file entry must be an object");
  FileEntry f;
  DS_ASSIGN_OR_RETURN(f.path, Str(j, "path"));
  DS_ASSIGN_OR_RETURN(std::string kind, Str(j, "kind"));
  DS_ASSIGN_OR_RETURN(f.size, U64(j, "size"));
  DS_ASSIGN_OR_RETURN(f.sha256, DigestField(j, "sha256"));
  if (j.contains("source_sha256")) {
    DS_ASSIGN_OR_RETURN(Digest src, DigestField(j, "source_sha256"));
    f.source_sha256 = src;
  }
  if (kind == "safetensors") {
    f.kind = FileKind::kSafetensors;
    auto h = j.find("header");
    if (h == j.end()) return Bad("safetensors file needs a header chunk");
    DS_ASSIGN_OR_RETURN(ChunkRef header, ParseChunk(*h));
    if (header.raw_size > kChunkSize) return Bad("header chunk of " + f.path + " is too large");
    f.header = header;
    auto ts = j.find("tensors");
    if (ts == j.end() || !ts->is_array()) return Bad("tensors must be an array");
    uint64_t cursor = 0;
    for (const auto& t : *ts) {
      DS_ASSIGN_OR_RETURN(TensorEntry e, ParseTensor(t));
      if (e.offset != cursor) return Bad("tensors of " + f.path + " are not contiguous");
      cursor += e.size;
      f.tensors.push_back(std::move(e));
    }
    if (header.raw_size + cursor != f.size) return Bad("header and tensors of " + f.path + " do not add up");
  } else if (kind == "blob") {
    f.kind = FileKind::kBlob;
    DS_ASSIGN_OR_RETURN(f.chunks, ParseChunks(j, "chunks"));
    uint64_t covered = 0;
    for (const auto& c : f.chunks) {
      if (c.raw_size > kChunkSize || c.raw_size > f.size - covered)
        return Bad("chunks of " + f.path + " have bad sizes");
      covered += c.raw_size;
    }
    if (covered != f.size) return Bad("chunks of " + f.path + " do not cover its size");
  } else {
    return Bad("unknown file kind " + kind);
  }
  return f;
}

}  // namespace

std::string_view TensorEncodingName(TensorEncoding e) {
  switch (e) {
    case TensorEncoding::kStandalone: return "standalone";
    case TensorEncoding::kSameAsBase: return "same_as_base";
    case TensorEncoding::kDelta: return "delta";
    case TensorEncoding::kLossy: return "lossy";
  }
  return "?";
}

uint64_t Manifest::LogicalBytes() const {
  uint64_t n = 0;
  for (const auto& f : files) n += f.size;
  return n;
}

uint64_t Manifest::EncodedBytes() const {
  uint64_t n = 0;
  for (const auto& f : files) {
    if (f.header) n += f.header->stored_size;
    for (const auto& t : f.tensors)
      for (const auto& c : t.chunks) n += c.stored_size;
    for (const auto& c : f.chunks) n += c.stored_size;
  }
  return n;
}

std::vector<Digest> Manifest::ChunkDigests() const {
  std::vector<Digest> out;
  for (const auto& f : files) {
    if (f.header) out.push_back(f.header->digest);
    for (const auto& t : f.tensors)
      for (const auto& c : t.chunks) out.push_back(c.digest);
    for (const auto& c : f.chunks) out.push_back(c.digest);
  }
  return out;
}

const FileEntry* Manifest::FindFile(std::string_view path) const {
  for (const auto& f : files) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

std::string SerializeManifest(const Manifest& m) {
  json files = json::array();
  for (const auto& f : m.files) {
    json jf = {{"path", f.path}, {"size", f.size}, {"sha256", f.sha256.ToString()}};
    if (f.source_sha256) jf["source_sha256"] = f.source_sha256->ToString();
    if (f.kind == FileKind::kSafetensors) {
      jf["kind"] = "safetensors";
      jf["header"] = ChunkToJson(*f.header);
      json ts = json::array();
      for (const auto& t : f.tensors) {
        ts.push_back({{"name", t.name},
                      {"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"offset", t.offset},
                      {"size", t.size},
                      {"sha256", t.sha256.ToString()},
                      {"encoding", TensorEncodingName(t.encoding)},
                      {"chunks", ChunksToJson(t.chunks)}});
      }
      jf["tensors"] = std::move(ts);
    } else {
      jf["kind"] = "blob";
      jf["chunks"] = ChunksToJson(f.chunks);
    }
    files.push_back(std::move(jf));
  }
  json doc = {{"format", "deltastore.manifest"},
              {"format_version", kManifestFormatVersion},
              {"mode", m.mode},
              {"base", m.base ? json(m.base->ToString()) : json(nullptr)},
              {"files", std::move(files)}};
  return doc.dump();
}

StatusOr<Manifest> ParseManifest(std::string_view text) {
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return Bad("not a JSON object");
  DS_ASSIGN_OR_RETURN(std::string format, Str(doc, "format"));
  if (format != "deltastore.manifest") return Bad("format is not deltastore.manifest");
  DS_ASSIGN_OR_RETURN(uint64_t version, U64(doc, "format_version"));
  if (version != kManifestFormatVersion) {
    return Bad("format_version " + std::to_string(version) + " is not supported by this build");
  }
  Manifest m;
  DS_ASSIGN_OR_RETURN(m.mode, Str(doc, "mode"));
  auto base = doc.find("base");
  if (base != doc.end() && !base->is_null()) {
    DS_ASSIGN_OR_RETURN(Digest b, DigestField(doc, "base"));
    m.base = b;
  }
  auto files = doc.find("files");
  if (files == doc.end() || !files->is_array()) return Bad("files must be an array");
  for (const auto& f : *files) {
    DS_ASSIGN_OR_RETURN(FileEntry e, ParseFile(f));
    m.files.push_back(std::move(e));
  }
  return m;
}

Digest ManifestDigest(const Manifest& m) {
  return Sha256::Of(SerializeManifest(m));
}

}  // namespace deltastore
