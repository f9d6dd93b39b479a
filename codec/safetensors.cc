#include "codec/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/endian.h"

namespace deltastore {
namespace {

using json = nlohmann::json;

uint64_t LoadLE64(const char* p) {
  return GetLE(p, 8);
}

std::string StoreLE64(uint64_t v) {
  std::string out;
  PutLE(&out, v, 8);
  return out;
}

Status Bad(const std::string& what) {
  return SafetensorsInvalid("safetensors: " + what);
}

StatusOr<uint64_t> ParseUnsigned(const json& v, const std::string& what) {
  if (!v.is_number_unsigned()) {
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    return Bad(what + " must be a non-negative integer");
  }
  return v.get<uint64_t>();
}

StatusOr<TensorInfo> ParseTensor(const std::string& name, const json& entry, uint64_t data_size) {
  if (!entry.is_object()) return Bad("tensor '" + name + "' is not an object");
  if (entry.size() != 3 || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    return Bad("tensor '" + name + "' must have exactly dtype, shape and data_offsets");
  }
  TensorInfo t;
  t.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) return Bad("tensor '" + name + "' dtype is not a string");
  auto dt = ParseDType(dtype.get<std::string>());
  if (!dt) return Bad("tensor '" + name + "' has unknown dtype '" + dtype.get<std::string>() + "'");
  t.dtype = *dt;

  const json& shape = entry["shape"];
  if (!shape.is_array()) return Bad("tensor '" + name + "' shape is not an array");
  if (shape.size() > kMaxTensorDims) return Bad("tensor '" + name + "' has too many dimensions");
  unsigned __int128 numel = 1;
  for (const auto& d : shape) {
    DS_ASSIGN_OR_RETURN(uint64_t dim, ParseUnsigned(d, "tensor '" + name + "' shape entry"));
    t.shape.push_back(dim);
    numel *= dim;
    if (numel > (unsigned __int128)data_size)
      numel = (unsigned __int128)data_size + 1;  // clamp, reported below
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return Bad("tensor '" + name + "' data_offsets must be [begin, end]");
  }
  DS_ASSIGN_OR_RETURN(t.begin, ParseUnsigned(offsets[0], "tensor '" + name + "' data_offsets"));
  DS_ASSIGN_OR_RETURN(t.end, ParseUnsigned(offsets[1], "tensor '" + name + "' data_offsets"));
  if (t.begin > t.end) return Bad("tensor '" + name + "' has begin > end");
  if (t.end > data_size) return Bad("tensor '" + name + "' data_offsets point past the end of the file");
  unsigned __int128 bytes = numel * DTypeSize(t.dtype);
  if (bytes != t.end - t.begin) {
    return Bad("tensor '" + name + "' spans " + std::to_string(t.end - t.begin) +
               " bytes but its shape and dtype need a different size");
  }
  return t;
}

// Counts and de-duplicates the keys of the top-level object without building it.
class TopLevelKeys : public nlohmann::json_sax<json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    ++depth_;
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ != 1) return true;
    if (!keys_.insert(k).second) {
      error_ = Bad("header has a duplicate key");
      return false;
    }
    if (keys_.size() > kMaxSafetensorsTensors + 1) {  // + 1: __metadata__
      error_ = TooManyTensors("safetensors: header has more than " + std::to_string(kMaxSafetensorsTensors) +
                              " tensors (the limit of one file; split the checkpoint into shards)");
      return false;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    error_ = Bad("header is not valid UTF-8 JSON");
    return false;
  }
  const Status& error() const { return error_; }

 private:
  int depth_ = 0;
  std::unordered_set<std::string> keys_;
  Status error_;
};

Status ScanTopLevelKeys(std::string_view text) {
  TopLevelKeys sax;
  bool ok = json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json,
                            /*strict=*/true);
  if (!sax.error().ok()) return sax.error();
  if (!ok) return Bad("header is not valid UTF-8 JSON");
  return OkStatus();
}

}  // namespace

const TensorInfo* SafetensorsHeader::Find(std::string_view name) const {
  auto it = std::lower_bound(by_name.begin(), by_name.end(), name,
                             [&](uint32_t i, std::string_view n) { return tensors[i].name < n; });
  if (it == by_name.end() || tensors[*it].name != name) return nullptr;
  return &tensors[*it];
}

bool IsSafetensorsPath(std::string_view path) {
  constexpr std::string_view kExt = ".safetensors";
  return path.size() >= kExt.size() && path.substr(path.size() - kExt.size()) == kExt;
}

StatusOr<uint64_t> ParseSafetensorsHeaderLength(std::string_view first8, uint64_t file_size) {
  if (first8.size() < 8 || file_size < 8) return Bad("file is shorter than the 8-byte header length");
  uint64_t n = LoadLE64(first8.data());
  if (n > kMaxSafetensorsHeaderSize) {
    return Bad("header length " + std::to_string(n) + " exceeds the limit of " +
               std::to_string(kMaxSafetensorsHeaderSize));
  }
  if (n > file_size - 8) return Bad("header length " + std::to_string(n) + " runs past the end of the file");
  if (n < 2) return Bad("header is too short to be a JSON object");
  return n;
}

// Over 100 lines on purpose: one linear scan of the header bytes (no second pass, no object tree).
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string header_bytes, uint64_t file_size) {
  DS_ASSIGN_OR_RETURN(uint64_t n, ParseSafetensorsHeaderLength(header_bytes, file_size));
  if (header_bytes.size() != 8 + n) return Bad("header bytes are truncated");
  std::string_view text(header_bytes.data() + 8, n);
  if (text.front() != '{') return Bad("header must start with '{'");

  // One linear SAX pass first: counts the tensors (bounded before any DOM is built) and rejects
  // duplicate top-level keys, which the DOM parser would silently merge. (nlohmann's callback parser,
  // used here before, scans the parent object at the end of every child: quadratic in the tensors.)
  DS_RETURN_IF_ERROR(ScanTopLevelKeys(text));
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad("header is not valid UTF-8 JSON");
  if (!doc.is_object()) return Bad("header is not a JSON object");

  SafetensorsHeader h;
  h.data_size = file_size - 8 - n;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Bad("__metadata__ must be an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return Bad("__metadata__ values must be strings");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    DS_ASSIGN_OR_RETURN(TensorInfo t, ParseTensor(it.key(), it.value(), h.data_size));
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& t : h.tensors) {
    if (t.begin < cursor) return Bad("tensor '" + t.name + "' overlaps the previous tensor");
    if (t.begin > cursor) return Bad("gap in the data section before tensor '" + t.name + "'");
    cursor = t.end;
  }
  if (cursor != h.data_size) {
    return Bad("tensors cover " + std::to_string(cursor) + " bytes but the data section has " +
               std::to_string(h.data_size));
  }
  h.by_name.resize(h.tensors.size());
  for (uint32_t i = 0; i < h.by_name.size(); ++i) h.by_name[i] = i;
  std::sort(h.by_name.begin(), h.by_name.end(),
            [&](uint32_t a, uint32_t b) { return h.tensors[a].name < h.tensors[b].name; });
  h.header_bytes = std::move(header_bytes);
  return h;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(std::string("cannot open the file: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return IOError("cannot stat the file");
  }
  auto file_size = static_cast<uint64_t>(st.st_size);
  auto read_exact = [&](uint64_t off, uint64_t len, char* out) -> Status {
    while (len > 0) {
      ssize_t r = ::pread(fd, out, len, static_cast<off_t>(off));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return IOError("short read");
      out += r;
      off += r;
      len -= r;
    }
    return OkStatus();
  };
  std::string header(8, '\0');
  Status s = file_size >= 8 ? read_exact(0, 8, header.data()) : OkStatus();
  StatusOr<uint64_t> n = s.ok() ? ParseSafetensorsHeaderLength(header, file_size) : StatusOr<uint64_t>(s);
  if (!n.ok()) {
    ::close(fd);
    return n.status();
  }
  header.resize(8 + *n);
  s = read_exact(8, *n, header.data() + 8);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  auto parsed = ParseSafetensorsHeader(std::move(header), file_size);
  if (!parsed.ok()) {
    ::close(fd);
    return parsed.status();
  }
  return std::unique_ptr<SafetensorsFile>(new SafetensorsFile(path, fd, std::move(*parsed)));
}

SafetensorsFile::~SafetensorsFile() {
  ::close(fd_);
}

Status SafetensorsFile::ReadAt(uint64_t offset, uint64_t len, char* out) const {
  if (offset + len > header_.file_size() || offset + len < offset)
    return OutOfRange("read past the end of the file");
  while (len > 0) {
    ssize_t r = ::pread(fd_, out, len, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return IOError("short read");
    out += r;
    offset += r;
    len -= r;
  }
  return OkStatus();
}

Status SafetensorsFile::ReadTensorRange(const TensorInfo& tensor, uint64_t offset, uint64_t len,
                                        char* out) const {
  if (offset + len > tensor.size()) return OutOfRange("read past end of tensor " + tensor.name);
  return ReadAt(header_.data_start() + tensor.begin + offset, len, out);
}

StatusOr<SafetensorsHeader> BuildSafetensorsHeader(const std::vector<TensorSpec>& tensors,
                                                   const std::map<std::string, std::string>& metadata) {
  json doc = json::object();
  if (!metadata.empty()) doc["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& spec : tensors) {
    if (spec.name == "__metadata__") return InvalidArgument("tensor name __metadata__ is reserved");
    if (doc.contains(spec.name)) return InvalidArgument("duplicate tensor name " + spec.name);
    uint64_t numel = 1;
    for (uint64_t d : spec.shape) numel *= d;
    uint64_t bytes = numel * DTypeSize(spec.dtype);
    doc[spec.name] = {
        {"dtype", DTypeName(spec.dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = doc.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string header = StoreLE64(text.size()) + text;
  return ParseSafetensorsHeader(std::move(header), 8 + text.size() + offset);
}

Status WriteSafetensorsFile(const std::string& path, const std::vector<TensorSpec>& tensors,
                            const std::vector<std::string>& data,
                            const std::map<std::string, std::string>& metadata) {
  if (tensors.size() != data.size()) return InvalidArgument("one data buffer per tensor");
  DS_ASSIGN_OR_RETURN(SafetensorsHeader h, BuildSafetensorsHeader(tensors, metadata));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return IOError("cannot create " + path);
  out.write(h.header_bytes.data(), static_cast<std::streamsize>(h.header_bytes.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo* t = h.Find(tensors[i].name);
    if (t == nullptr || t->size() != data[i].size()) {
      return InvalidArgument("tensor " + tensors[i].name + " data size does not match its shape");
    }
    out.write(data[i].data(), static_cast<std::streamsize>(data[i].size()));
  }
  out.close();
  if (!out) return IOError("write failed: " + path);
  return OkStatus();
}

}  // namespace deltastore
