// A lossy version's tensors encoded at once (IngestOptions::lossy_reach, LossyAhead): the hooks of tensors
// the carry-over's reach leaves apart run side by side, and the manifest, the stored bytes, the served
// file's hash and the quality report are those of a one-thread run.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>

#include "codec/safetensors.h"
#include "service/lossy_policy.h"
#include "storage/stores.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string F32Bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

constexpr int kLossyTensors = 12;  // the carry-over reaches 3 tensors back

// A base and a finetune of 12 lossy 48 x 32 tensors whose deltas grow in size (so that their shares and
// what they leave unspent differ), each followed by a 1-D bias that changes too (stored losslessly, so
// the served file's hash interleaves the two kinds).
struct Pair {
  TempDir tmp;
  fs::path base = tmp.path() / "base.safetensors", ft = tmp.path() / "ft.safetensors";
  Pair() {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<TensorSpec> specs;
    std::vector<std::string> b, f;
    for (int i = 0; i < kLossyTensors; ++i) {
      const std::string layer = "layers." + std::to_string(i);
      std::vector<float> wb(48 * 32), wf(wb.size()), bb(32), bf(32);
      for (size_t j = 0; j < wb.size(); ++j)
        wb[j] = 0.05f * n(rng), wf[j] = wb[j] + 0.001f * (1 + i) * n(rng);
      for (size_t j = 0; j < bb.size(); ++j) bb[j] = n(rng), bf[j] = bb[j] + 0.01f;
      specs.push_back({layer + ".mlp.weight", DType::kF32, {48, 32}});
      specs.push_back({layer + ".mlp.bias", DType::kF32, {32}});
      b.push_back(F32Bytes(wb)), b.push_back(F32Bytes(bb));
      f.push_back(F32Bytes(wf)), f.push_back(F32Bytes(bf));
    }
    EXPECT_TRUE(WriteSafetensorsFile(base.string(), specs, b).ok());
    EXPECT_TRUE(WriteSafetensorsFile(ft.string(), specs, f).ok());
  }
};

struct Result {
  Manifest manifest;
  json quality;
  IngestStats stats;
  std::vector<IngestProgress> progress;
};

// The finetune ingested lossily on `threads` threads; `wrap` may wrap the encoding hook.
Result Ingest(const Pair& p, size_t threads, const std::function<LossyHook(LossyHook)>& wrap = {}) {
  Result out;
  std::shared_ptr<ChunkStore> store = NewMemoryChunkStore();
  auto base = IngestFiles(store.get(), {{p.base.string(), "model.safetensors"}}, nullptr, {}, nullptr);
  EXPECT_TRUE(base.ok()) << base.status().ToString();
  auto policy = ParseLossyPolicy({{"mode", "lossy"}, {"ratio", 32}});
  EXPECT_TRUE(policy.ok());
  if (!base.ok() || !policy.ok()) return out;
  policy->min_elements = 1024;
  LossyHooks hooks = MakeLossyHooks(*policy, nullptr, threads);
  IngestOptions options;
  options.lossy = wrap ? wrap(hooks.encode) : hooks.encode;
  options.lossy_takes = hooks.takes;
  options.lossy_planner = hooks.planner;
  options.lossy_reach = hooks.reach;
  options.encode_threads = threads;
  VersionReader reader(store.get(), *base,
                       [](const Digest&) -> StatusOr<Manifest> { return NotFound("none"); });
  auto m = IngestFiles(store.get(), {{p.ft.string(), "model.safetensors"}}, &reader, options, &out.stats,
                       [&](const IngestProgress& q) { out.progress.push_back(q); });
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return out;
  out.manifest = *m;
  out.quality = QualityReport(*policy, out.stats, *m);
  return out;
}

TEST(LossyAheadTest, TheCarryOverReachesAQuarterOfThePlannedBytesFromEightTensorsOn) {
  EXPECT_EQ(CarryReach({}), 0u);
  EXPECT_EQ(CarryReach(std::vector<uint64_t>(7, 1000)), 0u);  // every tensor before counts
  EXPECT_EQ(CarryReach(std::vector<uint64_t>(8, 1000)), 2000u);
  EXPECT_EQ(CarryReach({100, 100, 100, 100, 100, 100, 100, 46900}), 11900u);
}

TEST(LossyAheadTest, TensorsEncodedAtOnceGiveTheBytesOfOneThread) {
  Pair p;
  Result one = Ingest(p, 1);
  Result three = Ingest(p, 3);
  ASSERT_EQ(one.quality["tensors"].size(), static_cast<size_t>(kLossyTensors)) << one.quality.dump(1);
  EXPECT_EQ(SerializeManifest(one.manifest), SerializeManifest(three.manifest));  // chunks, tensors' sha256
  ASSERT_EQ(one.manifest.files.size(), 1u);
  EXPECT_NE(one.manifest.files[0].source_sha256, one.manifest.files[0].sha256);  // the served file's own
  EXPECT_EQ(one.quality.dump(), three.quality.dump());
  EXPECT_EQ(one.stats.encoded_bytes, three.stats.encoded_bytes);
  EXPECT_EQ(three.stats.tensors_lossy, static_cast<uint64_t>(kLossyTensors));
  EXPECT_EQ(three.stats.tensors_delta, static_cast<uint64_t>(kLossyTensors));  // the biases
  // The carry-over still lands the version near its ratio.
  EXPECT_NEAR(three.quality["lossy_ratio"].get<double>(), 32, 3.2) << three.quality.dump(1);
  // Progress from the hooks' threads never moves back, and ends with every tensor and byte.
  uint64_t bytes = 0, tensors = 0;
  for (const IngestProgress& q : three.progress) {
    if (q.phase != "encoding") continue;
    EXPECT_GE(q.bytes_done, bytes);
    EXPECT_GE(q.tensors_done, tensors);
    bytes = q.bytes_done, tensors = q.tensors_done;
  }
  ASSERT_FALSE(three.progress.empty());
  EXPECT_EQ(three.progress.back().bytes_done, three.progress.back().bytes_total);
  EXPECT_EQ(three.progress.back().tensors_done, static_cast<uint64_t>(2 * kLossyTensors));
}

// The first tensor's hook waits until the second one's has begun: it only can if they run at once.
TEST(LossyAheadTest, TheHooksOfAWindowRunSideBySide) {
  Pair p;
  std::mutex mu;
  std::condition_variable began;
  std::set<std::string> started;
  bool side_by_side = false;
  auto wrap = [&](const LossyHook& inner) -> LossyHook {
    return [&, inner](const TensorInfo& t, const std::string& b, const std::string& f, uint32_t stream,
                      const LossyStep& step, const LossyRebuilt& rebuilt) {
      {
        std::unique_lock<std::mutex> lock(mu);
        started.insert(t.name);
        began.notify_all();
        if (t.name == "layers.0.mlp.weight") {
          side_by_side = began.wait_for(lock, std::chrono::seconds(30),
                                        [&] { return started.count("layers.1.mlp.weight") > 0; });
        }
      }
      return inner(t, b, f, stream, step, rebuilt);
    };
  };
  Result r = Ingest(p, 2, wrap);
  EXPECT_TRUE(side_by_side);
  EXPECT_EQ(r.stats.tensors_lossy, static_cast<uint64_t>(kLossyTensors));
}

}  // namespace
}  // namespace deltastore
