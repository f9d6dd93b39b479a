// AuditBuilder on hand-made manifests: attribution of shared chunks to the first version, the sum
// identity, families, and codec savings by kind.
#include "service/audit.h"

#include <gtest/gtest.h>

namespace deltastore {
namespace {

ChunkRef Chunk(const std::string& content, uint64_t raw, uint64_t stored) {
  return ChunkRef{Sha256::Of(content), raw, stored};
}

TensorEntry Tensor(const std::string& name, TensorEncoding enc, std::vector<ChunkRef> chunks, uint64_t size) {
  TensorEntry t;
  t.name = name;
  t.encoding = enc;
  t.chunks = std::move(chunks);
  t.size = size;
  return t;
}

Manifest OneFile(std::vector<TensorEntry> tensors, ChunkRef header, std::optional<Digest> base = {}) {
  FileEntry f;
  f.path = "model.safetensors";
  f.kind = FileKind::kSafetensors;
  f.header = header;
  f.size = header.raw_size;
  for (const auto& t : tensors) f.size += t.size;
  f.tensors = std::move(tensors);
  Manifest m;
  m.base = base;
  m.files.push_back(std::move(f));
  return m;
}

AuditVersionInfo Info(const std::string& model, const std::string& name) {
  AuditVersionInfo i;
  i.model = model;
  i.digest = Sha256::Of(name);
  i.mode = "lossless";
  return i;
}

void ExpectSum(const AuditFigures& f) {
  EXPECT_EQ(static_cast<int64_t>(f.logical_bytes),
            static_cast<int64_t>(f.stored_bytes + f.saved_dedup_bytes) + f.saved_lossless_bytes +
                f.saved_lossy_bytes);
}

TEST(AuditBuilder, AttributesSharedChunksToTheFirstVersionAndKeepsTheSums) {
  ChunkRef header = Chunk("h", 100, 100);
  Manifest base = OneFile({Tensor("a", TensorEncoding::kStandalone, {Chunk("a", 1000, 600)}, 1000),
                           Tensor("b", TensorEncoding::kStandalone, {Chunk("b", 1000, 700)}, 1000)},
                          header);
  Manifest ft = OneFile({Tensor("a", TensorEncoding::kSameAsBase, {}, 1000),
                         Tensor("b", TensorEncoding::kDelta, {Chunk("db", 1000, 50)}, 1000)},
                        header, Sha256::Of("base"));
  Manifest lossy = OneFile({Tensor("a", TensorEncoding::kSameAsBase, {}, 1000),
                            Tensor("b", TensorEncoding::kLossy, {Chunk("lb", 1000, 10)}, 1000)},
                           header, Sha256::Of("ft"));  // a finetune of the finetune
  Manifest copy = base;                                // the same checkpoint as another model
  copy.base.reset();

  AuditBuilder b;
  b.Add(Info("m", "base"), base);
  b.Add(Info("m-ft", "ft"), ft);
  b.Add(Info("m-lossy", "lossy"), lossy);
  b.Add(Info("copy", "copy"), copy);
  AuditReport r = b.Finish("now", 100 + 600 + 700 + 50 + 10, 5);

  ASSERT_EQ(r.versions.size(), 4u);
  const AuditFigures& fb = r.versions[0].figures;
  EXPECT_EQ(fb.logical_bytes, 2100u);
  EXPECT_EQ(fb.stored_bytes, 1400u);
  EXPECT_EQ(fb.saved_lossless_bytes, 700);
  EXPECT_EQ(fb.saved_dedup_bytes, 0u);
  const AuditFigures& ff = r.versions[1].figures;
  EXPECT_EQ(ff.stored_bytes, 50u);
  EXPECT_EQ(ff.same_as_base_bytes, 1000u);
  EXPECT_EQ(ff.saved_dedup_bytes, 1100u);  // tensor a, and the header the base stored first
  EXPECT_EQ(ff.saved_lossless_bytes, 950);
  const AuditFigures& fl = r.versions[2].figures;
  EXPECT_EQ(fl.saved_lossy_bytes, 990);
  EXPECT_EQ(fl.stored_bytes, 10u);
  const AuditFigures& fc = r.versions[3].figures;
  EXPECT_EQ(fc.stored_bytes, 0u);
  EXPECT_EQ(fc.saved_dedup_bytes, fc.logical_bytes);
  for (const auto& v : r.versions) ExpectSum(v.figures);
  ExpectSum(r.total);
  EXPECT_EQ(r.total.stored_bytes, r.chunk_store_bytes);
  EXPECT_EQ(r.total.versions, 4u);

  // Families: the finetune of the finetune belongs to the root base.
  ASSERT_EQ(r.families.size(), 2u);
  const AuditFamily& fam = r.families.at(Sha256::Of("base"));
  EXPECT_EQ(fam.model, "m");
  EXPECT_EQ(fam.models, (std::set<std::string>{"m", "m-ft", "m-lossy"}));
  EXPECT_EQ(fam.figures.versions, 3u);
  EXPECT_EQ(r.versions[2].family, Sha256::Of("base"));
  AuditFigures sum;
  for (const auto& [d, f] : r.families) sum.Add(f.figures);
  EXPECT_EQ(sum.ToJson(), r.total.ToJson());
  sum = {};
  for (const auto& [m, f] : r.models) sum.Add(f);
  EXPECT_EQ(sum.ToJson(), r.total.ToJson());

  nlohmann::json j = r.ToJson();
  EXPECT_EQ(j["store"]["unattributed_bytes"], 0);
  EXPECT_EQ(j["models"].size(), 4u);
  EXPECT_EQ(j["bases"].size(), 2u);
}

TEST(AuditBuilder, ExpandingChunksSaveANegativeAmountAndTheSumStillHolds) {
  Manifest m =
      OneFile({Tensor("a", TensorEncoding::kStandalone, {Chunk("a", 10, 25)}, 10)}, Chunk("h", 8, 8));
  AuditBuilder b;
  b.Add(Info("m", "v"), m);
  AuditReport r = b.Finish("now", 33, 2);
  EXPECT_EQ(r.total.saved_lossless_bytes, -15);
  ExpectSum(r.total);
}

TEST(AuditReport, QualitySummaryDropsThePerTensorList) {
  nlohmann::json q = {{"ratio", 2.5}, {"weight_error", 0.1}, {"tensors", nlohmann::json::array({1, 2})}};
  nlohmann::json s = AuditReport::QualitySummary(q);
  EXPECT_EQ(s["ratio"], 2.5);
  EXPECT_FALSE(s.contains("tensors"));
  EXPECT_TRUE(AuditReport::QualitySummary(nullptr).is_null());
}

}  // namespace
}  // namespace deltastore
