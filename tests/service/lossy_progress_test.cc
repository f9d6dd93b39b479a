// A lossy tensor's work reports progress and checks for cancellation inside the tensor (LossyStep): the
// ingest's bytes_done moves before the tensor ends, and a cancellation seen there stops the ingest within
// the tensor with the ingest's cancellation status.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>

#include "codec/safetensors.h"
#include "service/lossy_policy.h"
#include "storage/stores.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;

struct Pair {
  fs::path dir, base, ft;
  uint64_t tensor_bytes = 0;
};

// One 256 x 128 f32 tensor whose finetune differs from the base by dense noise.
Pair MakePair(const std::string& name) {
  Pair p;
  p.dir = fs::temp_directory_path() / ("ds_lossy_progress_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p.dir);
  fs::create_directories(p.dir);
  p.base = p.dir / "base.safetensors";
  p.ft = p.dir / "ft.safetensors";
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> b(256 * 128), f(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = 0.05f * n(rng);
    f[i] = b[i] + 0.004f * n(rng);
  }
  auto bytes = [](const std::vector<float>& v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(s.data(), v.data(), s.size());
    return s;
  };
  std::vector<TensorSpec> specs = {{"layers.0.mlp.weight", DType::kF32, {256, 128}}};
  EXPECT_TRUE(WriteSafetensorsFile(p.base.string(), specs, {bytes(b)}).ok());
  EXPECT_TRUE(WriteSafetensorsFile(p.ft.string(), specs, {bytes(f)}).ok());
  p.tensor_bytes = b.size() * 4;
  return p;
}

// Ingests the pair's finetune with a lossy policy; `cancelled` as the ingest's cancellation check.
Status Ingest(const Pair& p, const nlohmann::json& policy_json, const std::function<bool()>& cancelled,
              std::vector<IngestProgress>* progress) {
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  auto base = IngestFiles(store.get(), {{p.base.string(), "model.safetensors"}}, nullptr, {}, nullptr);
  if (!base.ok()) return base.status();
  DS_ASSIGN_OR_RETURN(LossyPolicy policy, ParseLossyPolicy(policy_json));
  LossyHooks hooks = MakeLossyHooks(policy, nullptr, 1);
  IngestOptions options;
  options.lossy = hooks.encode;
  options.lossy_takes = hooks.takes;
  options.lossy_planner = hooks.planner;
  options.cancelled = cancelled;
  VersionReader reader(store.get(), *base,
                       [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); });
  return IngestFiles(store.get(), {{p.ft.string(), "model.safetensors"}}, &reader, options, nullptr,
                     [&](const IngestProgress& q) { progress->push_back(q); })
      .status();
}

TEST(LossyProgressIngestTest, BytesDoneMovesInsideALossyTensor) {
  Pair p = MakePair("moves");
  std::vector<IngestProgress> progress;
  Status s = Ingest(p, {{"mode", "lossy"}, {"ratio", 16}, {"allocate", false}}, {}, &progress);
  ASSERT_TRUE(s.ok()) << s.ToString();
  size_t inside = 0;
  uint64_t last = 0;
  for (const IngestProgress& q : progress) {
    EXPECT_GE(q.bytes_done, last);
    last = q.bytes_done;
    if (q.tensors_done == 0 && q.bytes_done > 0 && q.bytes_done < p.tensor_bytes) ++inside;
  }
  EXPECT_GE(inside, 5u);  // the search's builds
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes_done, p.tensor_bytes);
  fs::remove_all(p.dir);
}

TEST(LossyProgressIngestTest, ACancellationInsideALossyTensorStopsTheIngestThere) {
  Pair p = MakePair("cancel");
  for (bool allocate : {false, true}) {
    std::vector<IngestProgress> progress;
    std::atomic<int> checks = 0;  // a planner's probe checks on its worker
    // Not cancelled at the tensor's start (one check), then cancelled at the work's first step.
    Status s = Ingest(
        p, {{"mode", "lossy"}, {"ratio", 16}, {"allocate", allocate}}, [&] { return ++checks > 1; },
        &progress);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find("ingest cancelled"), std::string::npos) << s.ToString();
    // The tensor's start, the work's first step (which stopped it), the ingest's check of its failure.
    EXPECT_EQ(checks.load(), 3) << "allocate " << allocate;
    for (const IngestProgress& q : progress) {
      if (q.phase == "encoding") {
        EXPECT_EQ(q.tensors_done, 0u);
      }
    }
  }
  fs::remove_all(p.dir);
}

}  // namespace
}  // namespace deltastore
