#include "codec/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "tests/fixtures.h"

namespace deltastore {
namespace {

std::string Le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

// A file image from a JSON header text and a data section of `data_size` bytes.
std::string Image(const std::string& json_text, uint64_t data_size) {
  return Le64(json_text.size()) + json_text + std::string(data_size, '\x01');
}

StatusOr<SafetensorsHeader> ParseImage(const std::string& image) {
  if (image.size() < 8) return ParseSafetensorsHeader(image, image.size());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(image[i]);
  std::string header = image.substr(0, 8 + std::min<uint64_t>(n, image.size() - 8));
  return ParseSafetensorsHeader(header, image.size());
}

TEST(SafetensorsTest, ParsesValidHeaderAndKeepsBytesVerbatim) {
  std::string text =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
      R"("a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}   )";
  auto h = ParseImage(Image(text, 12));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].name, "a");  // data order
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].dtype, DType::kF32);
  EXPECT_EQ(h->metadata.at("format"), "pt");
  EXPECT_EQ(h->header_bytes, Le64(text.size()) + text);
  EXPECT_EQ(h->file_size(), 8 + text.size() + 12);
}

struct BadCase {
  const char* name;
  std::string image;
  const char* expect;  // substring of the error
};

// Over 100 lines on purpose: a table of hostile headers, one entry each.
std::vector<BadCase> BadCases() {
  auto t = [](const std::string& body, uint64_t data) { return Image(body, data); };
  std::vector<BadCase> c;
  c.push_back({"empty", "", "shorter"});
  c.push_back({"huge_length", Le64(1ull << 40) + "{}", "exceeds the limit"});
  c.push_back({"negative_length", Le64(~0ull) + "{}", "exceeds the limit"});
  c.push_back({"length_past_end", Le64(1000) + "{}", "past the end"});
  c.push_back({"not_json", t("{not json}", 0), "not valid UTF-8 JSON"});
  c.push_back({"bad_utf8", t("{\"\xff\xfe\":{}}", 0), "not valid UTF-8 JSON"});
  c.push_back({"array", t("[1,2]    ", 0), "start with '{'"});
  c.push_back(
      {"unknown_dtype", t(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4), "unknown dtype"});
  c.push_back(
      {"shape_negative", t(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "non-negative"});
  c.push_back(
      {"shape_float", t(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4), "non-negative"});
  c.push_back(
      {"size_mismatch", t(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "different size"});
  c.push_back({"shape_overflow",
               t(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4),
               "different size"});
  c.push_back(
      {"out_of_file", t(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 4), "past the end"});
  c.push_back(
      {"begin_after_end", t(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4), "begin > end"});
  c.push_back(
      {"overlap",
       t(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
         6),
       "overlaps"});
  c.push_back({"gap", t(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4), "gap"});
  c.push_back({"trailing_data", t(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 4), "cover"});
  c.push_back(
      {"duplicate_key",
       t(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
         4),
       "duplicate"});
  c.push_back(
      {"extra_field", t(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1}})", 2), "exactly"});
  c.push_back(
      {"offsets_not_pair", t(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", 2), "[begin, end]"});
  c.push_back({"metadata_not_strings", t(R"({"__metadata__":{"a":1}})", 0), "strings"});
  c.push_back({"tensor_not_object", t(R"({"a":3})", 0), "not an object"});
  c.push_back({"deep_nesting", t(std::string(100000, '['), 0), "start with"});
  c.push_back({"deep_nesting_in_object", t("{\"a\":" + std::string(100000, '[') + "}", 0), "JSON"});
  return c;
}

TEST(SafetensorsTest, RejectsHostileHeadersWithClearErrors) {
  for (const auto& c : BadCases()) {
    auto h = ParseImage(c.image);
    ASSERT_FALSE(h.ok()) << c.name;
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(h.status().message().find(c.expect), std::string::npos)
        << c.name << ": " << h.status().message();
  }
}

TEST(SafetensorsTest, ZeroSizedTensorsAreAccepted) {
  std::string text =
      R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  auto h = ParseImage(Image(text, 2));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors.size(), 2u);
}

TEST(SafetensorsTest, WriterRoundTripsThroughTheReader) {
  auto path = (std::filesystem::temp_directory_path() / "ds_st_roundtrip.safetensors").string();
  std::vector<TensorSpec> specs = {{"w", DType::kBF16, {2, 3}}, {"b", DType::kI32, {3}}};
  std::vector<std::string> data = {std::string(12, 'x'), std::string(12, 'y')};
  ASSERT_TRUE(WriteSafetensorsFile(path, specs, data, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const auto& h = (*f)->header();
  EXPECT_EQ(h.header_bytes.size() % 8, 0u);
  const TensorInfo* b = h.Find("b");
  ASSERT_NE(b, nullptr);
  std::string got(12, '\0');
  ASSERT_TRUE((*f)->ReadTensorRange(*b, 0, 12, got.data()).ok());
  EXPECT_EQ(got, data[1]);
  EXPECT_FALSE((*f)->ReadTensorRange(*b, 4, 12, got.data()).ok());
  std::filesystem::remove(path);
}

TEST(SafetensorsTest, OpensTheRealFixtures) {
  std::string dir = DS_FIXTURES_DIR;
  DS_REQUIRE_FIXTURE(dir + "/faceres.bf16.safetensors");
  for (const char* name : {"faceres.bf16", "faceres-deep.f32", "blazeface.f32"}) {
    auto f = SafetensorsFile::Open(dir + "/" + name + ".safetensors");
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_GT((*f)->header().tensors.size(), 1u);
  }
  auto f = SafetensorsFile::Open(dir + "/faceres.bf16.safetensors");
  EXPECT_EQ((*f)->header().tensors.size(), 128u);
}

TEST(SafetensorsTest, OpenReportsMissingAndTruncatedFiles) {
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/x.safetensors").status().code(), StatusCode::kNotFound);
  auto path = (std::filesystem::temp_directory_path() / "ds_st_trunc.safetensors").string();
  {
    std::ofstream out(path, std::ios::binary);
    std::string img = Image(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 8);
    out.write(img.data(), static_cast<std::streamsize>(img.size() - 3));
  }
  auto f = SafetensorsFile::Open(path);
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace deltastore
