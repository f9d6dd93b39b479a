// Fuzzes the safetensors header parser with the input as a whole file image, the way
// SafetensorsFile::Open reads one: the first 8 bytes give the JSON length, the parser gets the
// 8 + N prefix and the file size. When the data section in the input is shorter than the header
// claims (seeds are real headers without their megabytes of weights), the prefix is parsed a second
// time against a file as long as the header's largest end offset says.
#include <nlohmann/json.hpp>

#include "codec/safetensors.h"
#include "fuzz/fuzz_util.h"

using namespace deltastore;

namespace {

void CheckHeader(const SafetensorsHeader& h, const std::string& prefix, uint64_t file_size) {
  DS_FUZZ_CHECK(h.header_bytes == prefix, "header bytes are not kept verbatim");
  DS_FUZZ_CHECK(h.file_size() == file_size, "file size %llu != %llu", (unsigned long long)h.file_size(),
                (unsigned long long)file_size);
  uint64_t cursor = 0;
  for (const auto& t : h.tensors) {
    DS_FUZZ_CHECK(t.begin == cursor && t.end >= t.begin, "tensor %s is not contiguous", t.name.c_str());
    DS_FUZZ_CHECK(t.shape.size() <= kMaxTensorDims, "too many dims");
    DS_FUZZ_CHECK(DTypeSize(t.dtype) > 0, "unknown dtype accepted");
    unsigned __int128 numel = 1;
    for (uint64_t d : t.shape) numel *= d;  // shapes are bounded by the data section, no overflow
    DS_FUZZ_CHECK(numel * DTypeSize(t.dtype) == t.size(), "tensor %s size does not match its shape",
                  t.name.c_str());
    DS_FUZZ_CHECK(h.Find(t.name) != nullptr, "Find(%s) fails", t.name.c_str());
    DS_FUZZ_CHECK(t.name != "__metadata__", "__metadata__ parsed as a tensor");
    cursor = t.end;
  }
  DS_FUZZ_CHECK(cursor == h.data_size, "tensors do not cover the data section");
}

// The data section size the header claims: the largest data_offsets end (lenient look, no checks).
bool ClaimedDataSize(std::string_view json_text, uint64_t* out) {
  auto doc = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return false;
  uint64_t end = 0;
  for (const auto& [k, v] : doc.items()) {
    if (!v.is_object()) continue;
    auto it = v.find("data_offsets");
    if (it == v.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_unsigned()) continue;
    end = std::max(end, (*it)[1].get<uint64_t>());
  }
  *out = end;
  return true;
}

void ParseOnce(const std::string& prefix, uint64_t file_size) {
  auto h = ParseSafetensorsHeader(prefix, file_size);
  if (!h.ok()) {
    DS_FUZZ_CHECK(h.status().code() == StatusCode::kInvalidArgument, "unexpected error code: %s",
                  h.status().ToString().c_str());
    return;
  }
  CheckHeader(*h, prefix, file_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view file(reinterpret_cast<const char*>(data), size);
  auto n = ParseSafetensorsHeaderLength(file.substr(0, 8), size);
  if (!n.ok()) {
    DS_FUZZ_CHECK(n.status().code() == StatusCode::kInvalidArgument, "%s", n.status().ToString().c_str());
    return 0;
  }
  DS_FUZZ_CHECK(*n >= 2 && *n <= size - 8 && *n <= kMaxSafetensorsHeaderSize, "bad length %llu accepted",
                (unsigned long long)*n);
  std::string prefix(file.substr(0, 8 + *n));
  ParseOnce(prefix, size);
  // A truncated prefix must be refused, never read past.
  if (*n > 2) {
    auto t = ParseSafetensorsHeader(prefix.substr(0, prefix.size() - 1), size);
    DS_FUZZ_CHECK(!t.ok(), "truncated header accepted");
  }
  uint64_t claimed = 0;
  if (ClaimedDataSize(std::string_view(prefix).substr(8), &claimed) && claimed != size - 8 - *n &&
      claimed <= (uint64_t{1} << 62)) {
    ParseOnce(prefix, 8 + *n + claimed);
  }
  return 0;
}
