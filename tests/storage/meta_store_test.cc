// Every MetaStore implementation against the same cases: the embedded ones (memory, RocksDB) and
// PostgreSQL (a real server started by the test, tests/tools/pg_server.sh), conditional commits among them.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "storage/stores.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_servers.h"

namespace deltastore {
namespace {

class MetaStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "memory") {
      meta_ = NewMemoryMetaStore();
    } else if (GetParam() == "postgresql") {
      auto pg = OpenPgMetaStore({PgTestServer::Get().FreshDatabase()});
      ASSERT_TRUE(pg.ok()) << pg.status().ToString();
      meta_ = std::move(*pg);
    } else {
      dir_ = std::make_unique<TempDir>();
      auto stores = OpenRocksStores(RocksOptions{(dir_->path() / "db").string(), true});
      ASSERT_TRUE(stores.ok()) << stores.status().ToString();
      meta_ = stores->meta;
    }
  }

  std::unique_ptr<TempDir> dir_;
  std::shared_ptr<MetaStore> meta_;
};

TEST_P(MetaStoreTest, MetaCommitGetDelete) {
  EXPECT_EQ(meta_->Get("models", "m1").status().code(), StatusCode::kNotFound);
  MetaBatch batch;
  batch.Put("models", "m1", R"({"name":"m1"})");
  batch.Put("models", "m2", R"({"name":"m2"})");
  batch.Put("tags", "m1", "latest");
  EXPECT_FALSE(batch.empty());
  ASSERT_TRUE(meta_->Commit(batch).ok());
  EXPECT_EQ(*meta_->Get("models", "m1"), R"({"name":"m1"})");
  EXPECT_EQ(*meta_->Get("tags", "m1"), "latest");

  // Overwrite and delete in one batch; later ops win.
  MetaBatch b2;
  b2.Put("models", "m1", "v2");
  b2.Delete("models", "m2");
  b2.Put("models", "m3", "tmp");
  b2.Delete("models", "m3");
  ASSERT_TRUE(meta_->Commit(b2).ok());
  EXPECT_EQ(*meta_->Get("models", "m1"), "v2");
  EXPECT_EQ(meta_->Get("models", "m2").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->Get("models", "m3").status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(meta_->Delete("tags", "m1").ok());
  EXPECT_EQ(meta_->Get("tags", "m1").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(meta_->Delete("tags", "never-there").ok());
  ASSERT_TRUE(meta_->Commit(MetaBatch()).ok());

  // Keys and values are bytes: NULs are fine.
  const std::string key("a\0b", 3), value("x\0y\0", 4);
  ASSERT_TRUE(meta_->Put("bin", key, value).ok());
  EXPECT_EQ(*meta_->Get("bin", key), value);
  EXPECT_EQ(meta_->Get("bin", "a").status().code(), StatusCode::kNotFound);
}

std::vector<std::pair<std::string, std::string>> ScanAll(MetaStore& meta, std::string_view ns,
                                                         std::string_view prefix,
                                                         std::string_view start_after,
                                                         size_t limit = SIZE_MAX) {
  std::vector<std::pair<std::string, std::string>> out;
  Status s = meta.Scan(ns, prefix, start_after, [&](std::string_view k, std::string_view v) {
    out.emplace_back(std::string(k), std::string(v));
    return out.size() < limit;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<std::string> Keys(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : rows) keys.push_back(k);
  return keys;
}

TEST_P(MetaStoreTest, MetaScanPrefixStartAfterAndNamespaces) {
  MetaBatch batch;
  for (const char* k : {"v/a/1", "v/a/2", "v/a/3", "v/b/1", "v/ab", "w/1", "v", "u/9"}) {
    batch.Put("versions", k, std::string("val:") + k);
  }
  // Neighbouring namespaces must never leak into each other's scans.
  batch.Put("version", "v/a/0", "other-ns");
  batch.Put("versionsx", "v/a/9", "other-ns");
  batch.Put("versions\x01", "v/a/8", "other-ns");
  ASSERT_TRUE(meta_->Commit(batch).ok());

  using V = std::vector<std::string>;
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "", "")),
            (V{"u/9", "v", "v/a/1", "v/a/2", "v/a/3", "v/ab", "v/b/1", "w/1"}));
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "")), (V{"v/a/1", "v/a/2", "v/a/3"}));
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a", "")), (V{"v/a/1", "v/a/2", "v/a/3", "v/ab"}));
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "v/a/1")), (V{"v/a/2", "v/a/3"}));
  // start_after need not exist.
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "v/a/15")), (V{"v/a/2", "v/a/3"}));
  // start_after before the prefix range: from the beginning of the prefix.
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "a")), (V{"v/a/1", "v/a/2", "v/a/3"}));
  // start_after past the prefix range: nothing.
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "v/b")), V{});
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/a/", "v/a/3")), V{});
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "", "v/ab")), (V{"v/b/1", "w/1"}));
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "zzz", "")), V{});
  // The visitor stops the scan.
  EXPECT_EQ(Keys(ScanAll(*meta_, "versions", "v/", "", 2)), (V{"v/a/1", "v/a/2"}));
  // Values come with keys.
  auto rows = ScanAll(*meta_, "versions", "w/", "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].second, "val:w/1");

  EXPECT_EQ(Keys(ScanAll(*meta_, "version", "", "")), V{"v/a/0"});
  EXPECT_EQ(Keys(ScanAll(*meta_, "versionsx", "", "")), V{"v/a/9"});
  EXPECT_EQ(Keys(ScanAll(*meta_, "nothing", "", "")), V{});
  EXPECT_EQ(meta_->Get("version", "v/a/1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*meta_->Get("version", "v/a/0"), "other-ns");
}

TEST_P(MetaStoreTest, MetaScanVisitorMayReenterTheStore) {
  ASSERT_TRUE(meta_->Put("jobs", "1", "a").ok());
  ASSERT_TRUE(meta_->Put("jobs", "2", "b").ok());
  int visits = 0;
  Status s = meta_->Scan("jobs", "", "", [&](std::string_view k, std::string_view) {
    ++visits;
    EXPECT_TRUE(meta_->Get("jobs", k).ok());
    EXPECT_TRUE(meta_->Put("done", k, "1").ok());
    return true;
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(visits, 2);
  EXPECT_EQ(Keys(ScanAll(*meta_, "done", "", "")), (std::vector<std::string>{"1", "2"}));
}

TEST_P(MetaStoreTest, ConditionalCommitAppliesOnlyWhenEveryExpectationHolds) {
  ASSERT_TRUE(meta_->Put("tags", "m/latest", "v1").ok());
  MetaBatch stale;
  stale.Expect("tags", "m/latest", "v0");
  stale.Put("tags", "m/latest", "v2");
  stale.Put("other", "k", "x");
  Status s = meta_->Commit(stale);
  EXPECT_EQ(s.reason(), Reason::kCommitConflict) << s.ToString();
  EXPECT_EQ(*meta_->Get("tags", "m/latest"), "v1");
  EXPECT_EQ(meta_->Get("other", "k").status().code(), StatusCode::kNotFound);

  MetaBatch fresh;
  fresh.Expect("tags", "m/latest", "v1");
  fresh.Expect("uploads", "u1", std::nullopt);
  fresh.Put("tags", "m/latest", "v2");
  ASSERT_TRUE(meta_->Commit(fresh).ok());
  EXPECT_EQ(*meta_->Get("tags", "m/latest"), "v2");

  // Expecting absence fails once the key exists; expecting a present key fails once it is deleted.
  MetaBatch create;
  create.Expect("uploads", "u1", std::nullopt);
  create.Put("uploads", "u1", "open");
  ASSERT_TRUE(meta_->Commit(create).ok());
  EXPECT_EQ(meta_->Commit(create).reason(), Reason::kCommitConflict);
  ASSERT_TRUE(meta_->Delete("uploads", "u1").ok());
  MetaBatch seal;
  seal.Expect("uploads", "u1", "open");
  seal.Put("uploads", "u1", "sealed");
  EXPECT_EQ(meta_->Commit(seal).reason(), Reason::kCommitConflict);
  EXPECT_EQ(meta_->Get("uploads", "u1").status().code(), StatusCode::kNotFound);
}

// Many writers race to claim the same keys by read, check, conditional write: each key is won exactly
// once, and a counter bumped by retried read-modify-write commits loses no increment.
TEST_P(MetaStoreTest, ConcurrentConditionalWritersNeverBothWin) {
  constexpr int kThreads = 8, kKeys = 20, kBumps = 25;
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kKeys; ++k) {
        MetaBatch claim;
        claim.Expect("jobs", "job" + std::to_string(k), std::nullopt);
        claim.Put("jobs", "job" + std::to_string(k), "owner" + std::to_string(t));
        Status s = meta_->Commit(claim);
        if (s.ok()) {
          ++wins;
        } else {
          EXPECT_EQ(s.reason(), Reason::kCommitConflict) << s.ToString();
        }
      }
      for (int i = 0; i < kBumps; ++i) {
        for (;;) {
          auto now = meta_->Get("counters", "n");
          std::optional<std::string> old = now.ok() ? std::optional<std::string>(*now) : std::nullopt;
          MetaBatch bump;
          bump.Expect("counters", "n", old);
          bump.Put("counters", "n", std::to_string(old ? std::stoi(*old) + 1 : 1));
          Status s = meta_->Commit(bump);
          if (s.ok()) break;
          ASSERT_EQ(s.reason(), Reason::kCommitConflict) << s.ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), kKeys);
  EXPECT_EQ(*meta_->Get("counters", "n"), std::to_string(kThreads * kBumps));
}

// PostgreSQL going away fails requests with STORE_UNAVAILABLE (503), promptly; when it is back, the
// same store object serves again (its broken connections are replaced), and nothing committed is lost.
TEST(PgMetaStoreTest, ServerRestartFailsRequestsThenRecovers) {
  auto& server = PgTestServer::Get();
  auto opened = OpenPgMetaStore({server.FreshDatabase()});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<MetaStore> meta = std::move(*opened);
  ASSERT_TRUE(meta->Put("tags", "m/latest", "v1").ok());

  server.Kill();
  Status down = meta->Get("tags", "m/latest").status();
  EXPECT_EQ(down.reason(), Reason::kStoreUnavailable) << down.ToString();
  EXPECT_EQ(meta->Put("tags", "m/latest", "v2").reason(), Reason::kStoreUnavailable);

  server.Start();
  auto back = meta->Get("tags", "m/latest");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, "v1");
  ASSERT_TRUE(meta->Put("tags", "m/latest", "v2").ok());
  EXPECT_EQ(*meta->Get("tags", "m/latest"), "v2");
}

TEST(PgMetaStoreTest, UnreachableServerOrUnknownDatabaseFailsAtOpenWithTheReason) {
  auto none = OpenPgMetaStore({"postgresql://deltastore@127.0.0.1:" + std::to_string(FreePort()) + "/x"});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().reason(), Reason::kStoreUnavailable);
  EXPECT_NE(none.status().message().find("Connection refused"), std::string::npos)
      << none.status().ToString();

  PgTestServer::Get();  // running
  const std::string url = PgTestServer::Get().FreshDatabase();
  auto unknown = OpenPgMetaStore({url + "_missing"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("does not exist"), std::string::npos)
      << unknown.status().ToString();
}

INSTANTIATE_TEST_SUITE_P(Backends, MetaStoreTest, ::testing::Values("memory", "rocksdb", "postgresql"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace deltastore
