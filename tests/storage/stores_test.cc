// Every ChunkStore implementation against the same cases, plus the fault-injecting wrappers (the
// MetaStore cases are in meta_store_test.cc). Over 600 lines for a reason: one suite per interface
// keeps every engine to the same contract.
#include "storage/stores.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/sha256.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_servers.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;

StatusOr<Stores> OpenAt(const std::string& path) {
  return OpenRocksStores(RocksOptions{path, true});
}

std::string Bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Parameterised over the backends.

class StoresTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "memory") {
      chunks_ = NewMemoryChunkStore();
      meta_ = NewMemoryMetaStore();
    } else if (GetParam() == "s3") {
      meta_ = NewMemoryMetaStore();  // the reference rows
      auto s3 = OpenS3ChunkStore(S3TestServer::Get().FreshPrefix(), meta_);
      ASSERT_TRUE(s3.ok()) << s3.status().ToString();
      chunks_ = std::move(*s3);
    } else {
      dir_ = std::make_unique<TempDir>();
      auto stores = OpenAt(dir_->db());
      ASSERT_TRUE(stores.ok()) << stores.status().ToString();
      chunks_ = stores->chunks;
      meta_ = stores->meta;
    }
  }
  void TearDown() override {
    chunks_.reset();
    meta_.reset();
    dir_.reset();
  }
  // "Restart": a RocksDB store is closed and opened again from its directory (every other holder of
  // it must be gone); the memory store lives on, as a file system would.
  void Reopen() {
    if (GetParam() != "rocksdb") return;
    chunks_.reset();
    meta_.reset();
    auto stores = OpenAt(dir_->db());
    ASSERT_TRUE(stores.ok()) << stores.status().ToString();
    chunks_ = stores->chunks;
    meta_ = stores->meta;
  }

  std::unique_ptr<TempDir> dir_;
  std::shared_ptr<ChunkStore> chunks_;
  std::shared_ptr<MetaStore> meta_;
};

TEST_P(StoresTest, PutGetHasRoundTrip) {
  const std::string data = "hello, chunk";
  auto put = chunks_->Put(data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->digest, Sha256::Of(data));
  EXPECT_TRUE(put->inserted);
  EXPECT_EQ(put->stored_bytes, data.size());

  auto has = chunks_->Has(put->digest);
  ASSERT_TRUE(has.ok());
  EXPECT_TRUE(*has);
  auto get = chunks_->Get(put->digest);
  ASSERT_TRUE(get.ok()) << get.status().ToString();
  EXPECT_EQ(*get, data);
  EXPECT_EQ(*chunks_->RefCount(put->digest), 1);

  auto other = chunks_->Has(Sha256::Of("something else"));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(*other);

  // Binary data, including NULs, and the empty chunk.
  const std::string blob = Bytes(100000, 7);
  auto big = chunks_->Put(blob);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(*chunks_->Get(big->digest), blob);
  auto empty = chunks_->Put("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->inserted);
  EXPECT_EQ(*chunks_->Get(empty->digest), "");

  auto stats = chunks_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 3u);
  EXPECT_EQ(stats->bytes, data.size() + blob.size());
}

TEST_P(StoresTest, DedupAddsAReference) {
  const std::string data = Bytes(4096, 1);
  auto first = chunks_->Put(data);
  auto second = chunks_->Put(data);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(first->inserted);
  EXPECT_EQ(first->stored_bytes, 4096u);
  EXPECT_FALSE(second->inserted);
  EXPECT_EQ(second->stored_bytes, 0u);
  EXPECT_EQ(second->digest, first->digest);
  EXPECT_EQ(*chunks_->RefCount(first->digest), 2);
  auto stats = chunks_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 1u);
  EXPECT_EQ(stats->bytes, 4096u);
}

TEST_P(StoresTest, UnrefAndGcFreeOnlyUnreferencedChunks) {
  const std::string a = Bytes(1000, 1), b = Bytes(2000, 2), c = Bytes(3000, 3);
  Digest da = chunks_->Put(a)->digest;
  Digest db = chunks_->Put(b)->digest;
  ASSERT_TRUE(chunks_->Put(b).ok());
  Digest dc = chunks_->Put(c)->digest;
  ASSERT_TRUE(chunks_->Ref(dc, 3).ok());
  EXPECT_EQ(*chunks_->RefCount(dc), 4);

  ASSERT_TRUE(chunks_->Unref(da).ok());
  ASSERT_TRUE(chunks_->Unref(db).ok());
  ASSERT_TRUE(chunks_->Unref(dc, 4).ok());
  EXPECT_EQ(*chunks_->RefCount(da), 0);
  EXPECT_EQ(*chunks_->RefCount(db), 1);

  auto gc = chunks_->Gc();
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->chunks_deleted, 2u);
  EXPECT_EQ(gc->bytes_freed, a.size() + c.size());

  EXPECT_FALSE(*chunks_->Has(da));
  EXPECT_FALSE(*chunks_->Has(dc));
  EXPECT_EQ(chunks_->Get(da).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(chunks_->RefCount(da).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*chunks_->Get(db), b);
  EXPECT_EQ(*chunks_->RefCount(db), 1);
  auto stats = chunks_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 1u);
  EXPECT_EQ(stats->bytes, b.size());

  // Nothing left to collect.
  auto again = chunks_->Gc();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->chunks_deleted, 0u);
  EXPECT_EQ(again->bytes_freed, 0u);

  // A collected chunk can be stored again, starting from one reference.
  auto back = chunks_->Put(a);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->inserted);
  EXPECT_EQ(*chunks_->RefCount(da), 1);
}

TEST_P(StoresTest, NegativeRefcountIsCollected) {
  Digest d = chunks_->Put("x")->digest;
  ASSERT_TRUE(chunks_->Unref(d, 3).ok());
  EXPECT_EQ(*chunks_->RefCount(d), -2);
  auto gc = chunks_->Gc();
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->chunks_deleted, 1u);
  EXPECT_EQ(gc->bytes_freed, 1u);
}

TEST_P(StoresTest, MissingChunkIsNotFound) {
  const Digest missing = Sha256::Of("never stored");
  EXPECT_EQ(chunks_->Get(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(chunks_->RefCount(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(chunks_->Ref(missing).code(), StatusCode::kNotFound);
  EXPECT_EQ(chunks_->Unref(missing).code(), StatusCode::kNotFound);
  EXPECT_EQ(chunks_->SetRefCount(missing, 3).code(), StatusCode::kNotFound);
  EXPECT_FALSE(*chunks_->Has(missing));
  // None of that created anything.
  EXPECT_EQ(chunks_->Stats()->chunks, 0u);
  EXPECT_EQ(chunks_->Gc()->chunks_deleted, 0u);
}

TEST_P(StoresTest, SetRefCountAndForEach) {
  std::map<Digest, std::pair<int64_t, uint64_t>> expected;
  for (int i = 0; i < 20; ++i) {
    std::string data = Bytes(100 + i, 100 + i);
    Digest d = chunks_->Put(data)->digest;
    ASSERT_TRUE(chunks_->SetRefCount(d, i).ok());
    expected[d] = {i, data.size()};
  }
  EXPECT_EQ(*chunks_->RefCount(expected.begin()->first), expected.begin()->second.first);

  std::map<Digest, std::pair<int64_t, uint64_t>> seen;
  Status s = chunks_->ForEach([&](const Digest& d, int64_t refcount, uint64_t size) {
    EXPECT_FALSE(seen.count(d));
    seen[d] = {refcount, size};
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, expected);

  // The visitor's error stops the walk and comes back.
  int visits = 0;
  s = chunks_->ForEach([&](const Digest&, int64_t, uint64_t) {
    ++visits;
    return Internal("stop");
  });
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(visits, 1);

  // Refcount 0 (chunk i == 0) is collected.
  auto gc = chunks_->Gc();
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->chunks_deleted, 1u);
  EXPECT_EQ(gc->bytes_freed, 100u);
}

TEST_P(StoresTest, ConcurrentPutOfSameBytes) {
  const std::string data = Bytes(65536, 42);
  constexpr int kThreads = 4;
  std::atomic<int> ready{0};
  std::vector<PutResult> results(kThreads);
  std::vector<Status> statuses(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < kThreads) std::this_thread::yield();
      auto r = chunks_->Put(data);
      statuses[t] = r.status();
      if (r.ok()) results[t] = *r;
    });
  }
  for (auto& th : threads) th.join();
  int inserted = 0;
  uint64_t stored = 0;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(statuses[t].ok()) << statuses[t].ToString();
    inserted += results[t].inserted;
    stored += results[t].stored_bytes;
  }
  EXPECT_EQ(inserted, 1);
  EXPECT_EQ(stored, data.size());
  EXPECT_EQ(*chunks_->RefCount(Sha256::Of(data)), kThreads);
  auto stats = chunks_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, 1u);
  EXPECT_EQ(stats->bytes, data.size());
}

TEST_P(StoresTest, GcNeverCollectsAChunkHeldByAConcurrentPut) {
  const std::string data = Bytes(512, 9);
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::thread collector([&] {
    while (!done.load()) {
      if (!chunks_->Gc().ok()) ++failures;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < 2; ++t) {
    writers.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        auto put = chunks_->Put(data);
        if (!put.ok()) {
          ++failures;
          continue;
        }
        // Our reference keeps the chunk alive until we drop it.
        if (!chunks_->Get(put->digest).ok()) ++failures;
        if (!chunks_->Unref(put->digest).ok()) ++failures;
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  collector.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(chunks_->Gc().ok());
  EXPECT_EQ(chunks_->Stats()->chunks, 0u);
  EXPECT_EQ(chunks_->Stats()->bytes, 0u);
}

// ---- fault injection, over each backend as the inner store
// -------------------------------------------------

StatusOr<ChunkStoreStats> InnerStats(ChunkStore& inner) {
  return inner.Stats();
}

TEST_P(StoresTest, FaultWriteErrorLeavesInnerUntouched) {
  FaultPlan plan;
  plan.write_error_rate = 1.0;
  auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
  auto put = faulty->Put("payload");
  EXPECT_EQ(put.status().code(), StatusCode::kIOError);
  EXPECT_FALSE(*chunks_->Has(Sha256::Of("payload")));
  EXPECT_EQ(InnerStats(*chunks_)->chunks, 0u);
}

TEST_P(StoresTest, FaultReadError) {
  Digest d = chunks_->Put("payload")->digest;
  FaultPlan plan;
  plan.read_error_rate = 1.0;
  auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
  EXPECT_EQ(faulty->Get(d).status().code(), StatusCode::kIOError);
  // Other calls forward.
  EXPECT_TRUE(*faulty->Has(d));
  EXPECT_EQ(*faulty->RefCount(d), 1);
  EXPECT_EQ(*chunks_->Get(d), "payload");
}

TEST_P(StoresTest, FaultBitflipIsCaughtAsCorruption) {
  FaultPlan plan;
  plan.bitflip_rate = 1.0;
  auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
  for (int i = 0; i < 20; ++i) {
    const std::string data = Bytes(1 + i * 37, 500 + i);
    auto put = faulty->Put(data);  // writes are not affected by bit flips
    ASSERT_TRUE(put.ok());
    auto get = faulty->Get(put->digest);
    EXPECT_EQ(get.status().code(), StatusCode::kCorruption) << i;
    // The inner store still has the good bytes.
    EXPECT_EQ(*chunks_->Get(put->digest), data);
  }
}

TEST_P(StoresTest, FaultDiskFullAfterPuts) {
  FaultPlan plan;
  plan.fail_after_puts = 2;
  auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
  ASSERT_TRUE(faulty->Put("one").ok());
  ASSERT_TRUE(faulty->Put("two").ok());
  for (int i = 0; i < 3; ++i) {
    auto third = faulty->Put("three");
    EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(third.status().message(), "disk full (injected)");
    EXPECT_EQ(third.status().reason(), Reason::kDiskFull);
  }
  EXPECT_FALSE(*chunks_->Has(Sha256::Of("three")));
  auto stats = InnerStats(*chunks_);
  EXPECT_EQ(stats->chunks, 2u);
  EXPECT_EQ(stats->bytes, 6u);
  // Reads and the rest still work through the decorator.
  EXPECT_EQ(*faulty->Get(Sha256::Of("one")), "one");
  ASSERT_TRUE(faulty->Unref(Sha256::Of("one")).ok());
  EXPECT_EQ(faulty->Gc()->chunks_deleted, 1u);
  EXPECT_EQ(faulty->Stats()->chunks, 1u);
}

TEST_P(StoresTest, FaultInjectionIsDeterministic) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(chunks_->Put(std::to_string(i)).ok());
  FaultPlan plan;
  plan.read_error_rate = 0.3;
  plan.bitflip_rate = 0.3;
  plan.seed = 1234;
  auto run = [&](const FaultPlan& p) {
    auto faulty = NewFaultInjectingChunkStore(chunks_, p);
    std::vector<StatusCode> codes;
    for (int round = 0; round < 5; ++round) {
      for (int i = 0; i < 10; ++i) {
        auto get = faulty->Get(Sha256::Of(std::to_string(i)));
        if (get.ok()) {
          EXPECT_EQ(*get, std::to_string(i));
        }
        codes.push_back(get.status().code());
      }
    }
    return codes;
  };
  auto a = run(plan);
  auto b = run(plan);
  EXPECT_EQ(a, b);
  EXPECT_GT(std::count(a.begin(), a.end(), StatusCode::kOk), 0);
  EXPECT_GT(std::count(a.begin(), a.end(), StatusCode::kIOError), 0);
  EXPECT_GT(std::count(a.begin(), a.end(), StatusCode::kCorruption), 0);
  EXPECT_EQ(std::count(a.begin(), a.end(), StatusCode::kOk) +
                std::count(a.begin(), a.end(), StatusCode::kIOError) +
                std::count(a.begin(), a.end(), StatusCode::kCorruption),
            static_cast<long>(a.size()));
}

TEST_P(StoresTest, DamagedChunkIsRewrittenByTheNextPutOfItsBytes) {
  const std::string data = Bytes(5000, 77);
  const Digest d = Sha256::Of(data);
  ASSERT_TRUE(chunks_->PutUnverified(d, data.substr(0, 1234)).ok());
  EXPECT_EQ(chunks_->Get(d).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(*chunks_->RefCount(d), 1);
  EXPECT_EQ(chunks_->Stats()->bytes, 1234u);
  auto put = chunks_->Put(data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_FALSE(put->inserted);  // it was there, damaged: healed in place, one more reference
  EXPECT_EQ(*chunks_->Get(d), data);
  EXPECT_EQ(*chunks_->RefCount(d), 2);
  auto stats = chunks_->Stats();
  EXPECT_EQ(stats->chunks, 1u);
  EXPECT_EQ(stats->bytes, data.size());
}

// A torn Put: a prefix of the bytes under the full digest, then the "process" is dead.
TEST_P(StoresTest, TornPutIsNeverServedLeavesTheRestAloneAndHeals) {
  const std::string a = Bytes(3000, 1), b = Bytes(4000, 2), c = Bytes(10, 3);
  const Digest da = Sha256::Of(a), db = Sha256::Of(b);
  {
    FaultPlan plan;
    plan.torn_put_at = 1;
    plan.torn_keep = 0.25;
    auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
    ASSERT_TRUE(faulty->Put(a).ok());
    auto torn = faulty->Put(b);
    EXPECT_EQ(torn.status().code(), StatusCode::kIOError);
    EXPECT_NE(torn.status().message().find("torn write of chunk " + db.ToString() + ": 1000 of 4000 bytes"),
              std::string::npos)
        << torn.status().ToString();
    // Dead: nothing more reaches the store, every call says so.
    EXPECT_EQ(faulty->Put(c).status().code(), StatusCode::kIOError);
    EXPECT_EQ(faulty->Get(da).status().code(), StatusCode::kIOError);
    EXPECT_EQ(faulty->Unref(da, 1).code(), StatusCode::kIOError);
    EXPECT_EQ(faulty->Gc().status().code(), StatusCode::kIOError);
  }
  Reopen();
  EXPECT_FALSE(*chunks_->Has(Sha256::Of(c)));
  EXPECT_EQ(*chunks_->Get(da), a);  // nothing else damaged
  EXPECT_EQ(*chunks_->RefCount(da), 1);
  auto got = chunks_->Get(db);
  EXPECT_EQ(got.status().code(), StatusCode::kCorruption) << got.status().ToString();
  std::map<Digest, uint64_t> sizes;
  ASSERT_TRUE(chunks_
                  ->ForEach([&](const Digest& d, int64_t, uint64_t size) {
                    sizes[d] = size;
                    return OkStatus();
                  })
                  .ok());
  EXPECT_EQ(sizes[db], 1000u);
  // The client retries after the restart: the good bytes replace the torn ones.
  ASSERT_TRUE(chunks_->Put(b).ok());
  EXPECT_EQ(*chunks_->Get(db), b);
  EXPECT_EQ(chunks_->Stats()->bytes, a.size() + b.size());
}

// A torn Put of a chunk already present loses only the reference it was adding.
TEST_P(StoresTest, TornPutOfAPresentChunkLosesOnlyItsReference) {
  const std::string a = Bytes(3000, 5);
  ASSERT_TRUE(chunks_->Put(a).ok());
  {
    FaultPlan plan;
    plan.torn_put_at = 0;
    auto faulty = NewFaultInjectingChunkStore(chunks_, plan);
    EXPECT_EQ(faulty->Put(a).status().code(), StatusCode::kIOError);
  }
  Reopen();
  EXPECT_EQ(*chunks_->Get(Sha256::Of(a)), a);
  EXPECT_EQ(*chunks_->RefCount(Sha256::Of(a)), 1);
}

// A torn metadata batch: its first operations land, the rest do not, and the process is dead.
TEST_P(StoresTest, TornCommitAppliesOnlyThePrefixOfTheBatch) {
  ASSERT_TRUE(meta_->Put("models", "old", "kept").ok());
  {
    FaultPlan plan;
    plan.tear_commit_if = [](const MetaBatch& b) { return b.ops.size() == 4; };
    Stores faulty = NewFaultInjectingStores({chunks_, meta_, nullptr}, plan);
    ASSERT_TRUE(faulty.meta->Put("models", "before", "1").ok());  // one op: not torn
    MetaBatch batch;
    batch.Put("versions", "m/1", "record");
    batch.Put("digests", "d/m", "");
    batch.Put("tags", "m/latest", "d");
    batch.Delete("models", "old");
    Status s = faulty.meta->Commit(batch);
    EXPECT_EQ(s.code(), StatusCode::kIOError);
    EXPECT_NE(s.message().find("2 of 4 operations applied"), std::string::npos) << s.ToString();
    // One process: the chunk store died with it.
    EXPECT_EQ(faulty.chunks->Put("x").status().code(), StatusCode::kIOError);
    EXPECT_EQ(faulty.meta->Get("models", "old").status().code(), StatusCode::kIOError);
    EXPECT_EQ(faulty.meta->Put("models", "after", "1").code(), StatusCode::kIOError);
  }
  Reopen();
  EXPECT_EQ(*meta_->Get("models", "before"), "1");
  EXPECT_EQ(*meta_->Get("versions", "m/1"), "record");
  EXPECT_EQ(*meta_->Get("digests", "d/m"), "");
  EXPECT_EQ(meta_->Get("tags", "m/latest").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*meta_->Get("models", "old"), "kept");
  EXPECT_EQ(meta_->Get("models", "after").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(*chunks_->Has(Sha256::Of("x")));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoresTest, ::testing::Values("memory", "rocksdb", "s3"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---------------------------------------------------------------------------------------------------------
// RocksDB only.

TEST(RocksStoresTest, PersistsAcrossReopen) {
  TempDir dir;
  const std::string a = Bytes(5000, 1), b = Bytes(7000, 2);
  Digest da, db;
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok()) << stores.status().ToString();
    da = stores->chunks->Put(a)->digest;
    db = stores->chunks->Put(b)->digest;
    ASSERT_TRUE(stores->chunks->Put(b).ok());
    ASSERT_TRUE(stores->chunks->Ref(db, 5).ok());
    ASSERT_TRUE(stores->chunks->Unref(db).ok());
    ASSERT_TRUE(stores->meta->Put("models", "m1", "record-1").ok());
    ASSERT_TRUE(stores->meta->Put("models", "m2", "record-2").ok());
    ASSERT_TRUE(stores->meta->Delete("models", "m2").ok());
  }
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok()) << stores.status().ToString();
    EXPECT_EQ(*stores->chunks->Get(da), a);
    EXPECT_EQ(*stores->chunks->Get(db), b);
    EXPECT_EQ(*stores->chunks->RefCount(da), 1);
    EXPECT_EQ(*stores->chunks->RefCount(db), 6);
    auto stats = stores->chunks->Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->chunks, 2u);
    EXPECT_EQ(stats->bytes, a.size() + b.size());
    EXPECT_EQ(*stores->meta->Get("models", "m1"), "record-1");
    EXPECT_EQ(stores->meta->Get("models", "m2").status().code(), StatusCode::kNotFound);
    // Dedup across the reopen, then collect.
    EXPECT_FALSE(stores->chunks->Put(a)->inserted);
    ASSERT_TRUE(stores->chunks->Unref(da, 2).ok());
    EXPECT_EQ(stores->chunks->Gc()->bytes_freed, a.size());
  }
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok());
    EXPECT_FALSE(*stores->chunks->Has(da));
    EXPECT_EQ(stores->chunks->Stats()->chunks, 1u);
    EXPECT_EQ(stores->chunks->Stats()->bytes, b.size());
  }
}

TEST(RocksStoresTest, StoresShareTheDatabaseAndCloseWhenBothAreGone) {
  TempDir dir;
  auto stores = OpenAt(dir.db());
  ASSERT_TRUE(stores.ok());
  std::shared_ptr<ChunkStore> chunks = stores->chunks;
  stores->chunks.reset();
  ASSERT_TRUE(stores->meta->Put("ns", "k", "v").ok());
  stores->meta.reset();
  // The database is still open through `chunks`: a second open must fail on the lock.
  auto second = OpenAt(dir.db());
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIOError) << second.status().ToString();
  ASSERT_TRUE(chunks->Put("still open").ok());
  chunks.reset();
  auto third = OpenAt(dir.db());
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(*third->meta->Get("ns", "k"), "v");
  EXPECT_TRUE(*third->chunks->Has(Sha256::Of("still open")));
}

class TestInt64Add : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* out, rocksdb::Logger*) const override {
    int64_t a = 0, b = 0;
    if (existing != nullptr) {
      if (existing->size() != 8) return false;
      std::memcpy(&a, existing->data(), 8);
    }
    if (value.size() != 8) return false;
    std::memcpy(&b, value.data(), 8);
    int64_t sum = a + b;
    out->assign(reinterpret_cast<const char*>(&sum), 8);
    return true;
  }
  const char* Name() const override { return "deltastore.Int64Add"; }
};

// Opens the database directly with RocksDB and overwrites one chunk's value.
void TamperWithChunk(const std::string& path, const Digest& digest, const std::string& new_bytes) {
  rocksdb::DBOptions options;
  auto add = std::make_shared<TestInt64Add>();
  rocksdb::ColumnFamilyOptions with_merge;
  with_merge.merge_operator = add;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, with_merge},
                                                      {"chunks", rocksdb::ColumnFamilyOptions()},
                                                      {"refs", with_merge},
                                                      {"meta", rocksdb::ColumnFamilyOptions()}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path, cfs, &handles, &raw);
  ASSERT_TRUE(s.ok()) << s.ToString();
  rocksdb::WriteOptions wo;
  wo.sync = true;
  s = raw->Put(wo, handles[1], rocksdb::Slice(digest.Raw().data(), digest.Raw().size()), new_bytes);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (auto* h : handles) EXPECT_TRUE(raw->DestroyColumnFamilyHandle(h).ok());
  EXPECT_TRUE(raw->Close().ok());
  delete raw;
}

TEST(RocksStoresTest, DetectsOnDiskCorruption) {
  TempDir dir;
  const std::string good = Bytes(3000, 11), victim = Bytes(3000, 12);
  Digest dgood, dvictim;
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok());
    dgood = stores->chunks->Put(good)->digest;
    dvictim = stores->chunks->Put(victim)->digest;
  }
  std::string tampered = victim;
  tampered[1234] ^= 0x10;  // one flipped bit, same length
  TamperWithChunk(dir.db(), dvictim, tampered);
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok()) << stores.status().ToString();
    auto get = stores->chunks->Get(dvictim);
    EXPECT_EQ(get.status().code(), StatusCode::kCorruption) << get.status().ToString();
    EXPECT_TRUE(*stores->chunks->Has(dvictim));
    EXPECT_EQ(*stores->chunks->Get(dgood), good);
  }
  TamperWithChunk(dir.db(), dvictim, "entirely different bytes");
  {
    auto stores = OpenAt(dir.db());
    ASSERT_TRUE(stores.ok());
    EXPECT_EQ(stores->chunks->Get(dvictim).status().code(), StatusCode::kCorruption);
  }
}

TEST(RocksStoresTest, OpenErrorsAreStatuses) {
  TempDir dir;
  const fs::path file = dir.path() / "a-file";
  std::ofstream(file) << "not a directory";
  auto stores = OpenAt(file.string());
  ASSERT_FALSE(stores.ok());
  EXPECT_EQ(stores.status().code(), StatusCode::kIOError) << stores.status().ToString();
  auto under_file = OpenAt((file / "db").string());
  EXPECT_FALSE(under_file.ok());
  EXPECT_EQ(OpenAt("").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace deltastore
