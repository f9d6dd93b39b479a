// What only the S3 chunk store has: its URL, a server that goes away and comes back, credentials it
// refuses, bytes changed in the bucket behind its back, and two stores (two nodes) sharing one bucket
// and one set of reference rows while one collects garbage and the other puts the same chunks.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/s3_client.h"
#include "storage/stores.h"
#include "tests/storage/test_servers.h"

namespace deltastore {
namespace {

std::string ObjectKey(const Digest& d) {
  const std::string hex = d.Hex();
  return "chunks/" + hex.substr(0, 2) + "/" + hex;
}

// The keys under `prefix` of the store's bucket prefix.
std::vector<std::string> Keys(S3Client& client, std::string_view prefix) {
  std::vector<std::string> keys;
  EXPECT_TRUE(client.List(prefix, [&](std::string_view k, uint64_t) { keys.emplace_back(k); }).ok());
  return keys;
}

TEST(S3ClientTest, PutHeadRangeListDelete) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  o.list_page_size = 2;  // five keys: three pages, two continuation tokens
  auto client = S3Client::Open(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  S3Client& c = **client;
  const std::string bytes = "0123456789abcdef";
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.Put("dir/k" + std::to_string(i), bytes).ok());
  ASSERT_TRUE(c.Put("other", "x").ok());
  EXPECT_EQ(Keys(c, "dir/"), (std::vector<std::string>{"dir/k0", "dir/k1", "dir/k2", "dir/k3", "dir/k4"}));

  auto head = c.Head("dir/k3");
  ASSERT_TRUE(head.ok() && head->has_value()) << head.status().ToString();
  EXPECT_EQ((*head)->size, bytes.size());
  EXPECT_EQ((*head)->sha256, Sha256::Of(bytes).Hex());
  EXPECT_FALSE((*head)->etag.empty());
  auto absent = c.Head("dir/none");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());

  EXPECT_EQ(*c.GetRange("dir/k1", 10, 4), "abcd");
  EXPECT_EQ(*c.GetRange("dir/k1", 12, 100), "cdef");  // cut at the end
  EXPECT_EQ(c.GetRange("dir/k1", 16, 1).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c.GetRange("dir/none", 0, 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.Get("dir/none").status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(c.Delete("dir/k1").ok());
  ASSERT_TRUE(c.Delete("dir/k1").ok());  // absent: still fine
  EXPECT_EQ(Keys(c, "dir/").size(), 4u);
  // Another prefix of the same bucket sees none of it.
  S3Options other = S3TestServer::Get().FreshPrefix();
  auto c2 = S3Client::Open(other);
  ASSERT_TRUE(c2.ok());
  EXPECT_TRUE(Keys(**c2, "").empty());
}

TEST(S3UrlTest, ParsesBucketPrefixEndpointAndCredentials) {
  ::setenv("AWS_ACCESS_KEY_ID", "ak", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "sk", 1);
  ::unsetenv("AWS_SESSION_TOKEN");
  auto o = ParseS3Url(
      "s3://models/team/a?endpoint=http%3A%2F%2F127.0.0.1%3A8333&region=eu-west-1&path_style=false");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->bucket, "models");
  EXPECT_EQ(o->prefix, "team/a/");
  EXPECT_EQ(o->endpoint, "http://127.0.0.1:8333");
  EXPECT_EQ(o->region, "eu-west-1");
  EXPECT_FALSE(o->path_style);
  EXPECT_EQ(o->access_key, "ak");
  EXPECT_EQ(o->secret_key, "sk");

  auto aws = ParseS3Url("s3://models");
  ASSERT_TRUE(aws.ok());
  EXPECT_EQ(aws->endpoint, "https://s3.us-east-1.amazonaws.com");
  EXPECT_EQ(aws->prefix, "");
  EXPECT_TRUE(aws->path_style);

  EXPECT_EQ(ParseS3Url("http://models").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://bkt?endpoint=ftp://x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://bkt?colour=red").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://bkt?path_style=yes").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://Big_Bucket/p").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://ab").status().code(), StatusCode::kInvalidArgument);
  auto plain = ParseS3Url("s3://bkt/deep/prefix/?endpoint=http://10.0.0.1:9000/");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->prefix, "deep/prefix/");
  EXPECT_EQ(plain->endpoint, "http://10.0.0.1:9000");
  ::setenv("AWS_SESSION_TOKEN", "tok", 1);
  EXPECT_EQ(ParseS3Url("s3://bkt")->session_token, "tok");
  ::unsetenv("AWS_SESSION_TOKEN");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  auto missing = ParseS3Url("s3://bkt?endpoint=http://127.0.0.1:1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("AWS_SECRET_ACCESS_KEY"), std::string::npos);
}

TEST(S3StoreTest, UnreachableEndpointAndWrongCredentialsFailAtOpenWithTheReason) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  o.secret_key = "wrong";
  auto denied = OpenS3ChunkStore(o, NewMemoryMetaStore());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied) << denied.status().ToString();
  EXPECT_EQ(denied.status().message().find("wrong"), std::string::npos) << "the secret is never shown";

  o = S3TestServer::Get().FreshPrefix();
  o.endpoint = "http://127.0.0.1:" + std::to_string(FreePort());
  o.attempts = 2;
  auto down = OpenS3ChunkStore(o, NewMemoryMetaStore());
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().reason(), Reason::kStoreUnavailable) << down.status().ToString();
  EXPECT_NE(down.status().message().find(o.endpoint), std::string::npos) << down.status().ToString();
}

// Bytes replaced in the bucket behind the store's back (the same size): Get refuses them; the next Put
// of the right bytes sees (by the sha256 in the object's metadata) that S3 does not hold them and
// writes them again.
TEST(S3StoreTest, BytesChangedInTheBucketAreRefusedAsCorruptionAndHealedByPut) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  auto store = OpenS3ChunkStore(o, NewMemoryMetaStore());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const std::string data(10000, 'x');
  auto put = (*store)->Put(data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  auto client = S3Client::Open(o);
  ASSERT_TRUE(client.ok());
  std::string changed = data;
  changed[5000] = 'y';
  ASSERT_TRUE((*client)->Put(ObjectKey(put->digest), changed).ok());
  EXPECT_EQ((*store)->Get(put->digest).status().code(), StatusCode::kCorruption);
  // The listing shows the object where docs/s3_layout.md says it is.
  EXPECT_EQ(Keys(**client, "chunks/"), std::vector<std::string>{ObjectKey(put->digest)});

  auto again = (*store)->Put(data);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->inserted);
  EXPECT_EQ(again->stored_bytes, data.size());  // written again
  EXPECT_EQ(*(*store)->Get(put->digest), data);
  EXPECT_EQ(*(*store)->RefCount(put->digest), 2);
  auto third = (*store)->Put(data);  // intact now: deduplicated, nothing written
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->stored_bytes, 0u);
}

// The server dies: requests fail with STORE_UNAVAILABLE after their retries, naming the endpoint; a
// Put that failed keeps no reference. It starts again on the same data: the same store object works,
// and what was stored before is there.
TEST(S3StoreTest, ServerRestartFailsRequestsThenRecovers) {
  auto& server = S3TestServer::Get();
  S3Options o = server.FreshPrefix();
  auto store = OpenS3ChunkStore(o, NewMemoryMetaStore());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto before = (*store)->Put("stored before the crash");
  ASSERT_TRUE(before.ok());
  server.Kill();
  auto during = (*store)->Get(before->digest);
  EXPECT_EQ(during.status().reason(), Reason::kStoreUnavailable) << during.status().ToString();
  EXPECT_NE(during.status().message().find(o.endpoint), std::string::npos) << during.status().ToString();
  EXPECT_NE(during.status().message().find("after 3 tries"), std::string::npos) << during.status().ToString();
  auto lost = (*store)->Put("put while the server is down");
  EXPECT_EQ(lost.status().reason(), Reason::kStoreUnavailable) << lost.status().ToString();
  server.Start();
  auto after = (*store)->Get(before->digest);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(*after, "stored before the crash");
  const Digest lost_digest = Sha256::Of("put while the server is down");
  EXPECT_EQ(*(*store)->RefCount(lost_digest), 0);  // its reference was taken back
  auto gc = (*store)->Gc();
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->chunks_deleted, 1u);
  EXPECT_FALSE(*(*store)->Has(lost_digest));
  auto put = (*store)->Put("put while the server is down");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_TRUE(put->inserted);
  EXPECT_EQ(*(*store)->Get(lost_digest), "put while the server is down");
}

// A node died in the middle of a GC: the row is marked as being deleted, long ago. A Put of the chunk
// finishes that deletion and stores the chunk afresh; so does a GC for another such row.
TEST(S3StoreTest, DeletionLeftByADeadNodeIsFinishedByTheNextPutOrGc) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  std::shared_ptr<MetaStore> rows = NewMemoryMetaStore();
  auto store = OpenS3ChunkStore(o, rows);
  auto client = S3Client::Open(o);
  ASSERT_TRUE(store.ok() && client.ok());
  const std::string a = "chunk a", b = "chunk b";
  const Digest da = Sha256::Of(a), db = Sha256::Of(b);
  for (const auto& bytes : {a, b}) {
    auto put = (*store)->Put(bytes);
    ASSERT_TRUE(put.ok());
    ASSERT_TRUE((*store)->Unref(put->digest).ok());
    // The row as docs/s3_layout.md writes it: refs 0, marked as being deleted an hour ago.
    const std::string marked = "1 0 " + std::to_string(bytes.size()) + " 0 " +
                               std::to_string(std::time(nullptr) * 1000 - 3600 * 1000);
    ASSERT_TRUE(rows->Put("chunk_refs", put->digest.Hex(), marked).ok());
  }
  EXPECT_FALSE(*(*store)->Has(da));  // being deleted: not there for readers
  EXPECT_EQ((*store)->Ref(da).code(), StatusCode::kNotFound);
  EXPECT_EQ((*store)->Stats()->chunks, 0u);

  auto put = (*store)->Put(a);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_TRUE(put->inserted);
  EXPECT_EQ(put->stored_bytes, a.size());
  EXPECT_EQ(*(*store)->RefCount(da), 1);
  EXPECT_EQ(*(*store)->Get(da), a);

  auto gc = (*store)->Gc();
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->chunks_deleted, 1u);
  EXPECT_EQ(rows->Get("chunk_refs", db.Hex()).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE((*client)->Head(ObjectKey(db))->has_value());
  EXPECT_EQ(Keys(**client, "chunks/"), std::vector<std::string>{ObjectKey(da)});
}

// Two nodes share the bucket and the reference rows (one in-memory MetaStore, or each node its own
// connections to one PostgreSQL database); each puts, reads and drops the same chunks while each also
// collects garbage. Whatever the interleaving a chunk with a reference is never deleted, and once all
// is dropped and collected nothing is left: no row, no object.
class S3TwoNodesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(S3TwoNodesTest, GcOnBothNodesNeverDeletesAChunkEitherJustReferenced) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  std::shared_ptr<MetaStore> shared = NewMemoryMetaStore();
  const std::string pg_url = GetParam() == "postgresql" ? PgTestServer::Get().FreshDatabase() : "";
  std::shared_ptr<ChunkStore> nodes[2];
  for (auto& node : nodes) {
    std::shared_ptr<MetaStore> rows = shared;
    if (!pg_url.empty()) {
      auto pg = OpenPgMetaStore({pg_url});
      ASSERT_TRUE(pg.ok()) << pg.status().ToString();
      rows = std::move(*pg);
    }
    auto opened = OpenS3ChunkStore(o, rows);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    node = std::move(*opened);
  }
  std::vector<std::string> chunks;
  chunks.reserve(6);
  for (int i = 0; i < 6; ++i) chunks.push_back("chunk " + std::to_string(i) + std::string(3000, 'a' + i));
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<uint64_t> deleted{0};
  std::vector<std::thread> threads;
  for (auto& node : nodes) {
    threads.emplace_back([&, node] {
      while (!done) {
        auto gc = node->Gc();
        if (gc.ok()) {
          deleted += gc->chunks_deleted;
        } else {
          ++failures;
        }
      }
    });
  }
  std::atomic<int> writers{2};
  for (int n = 0; n < 2; ++n) {
    threads.emplace_back([&, n] {
      for (int round = 0; round < 10; ++round) {
        for (const auto& c : chunks) {
          auto put = nodes[n]->Put(c);
          // Referenced now: readable from either node, whatever the collectors do.
          auto got = put.ok() ? nodes[1 - n]->Get(put->digest) : put.status();
          if (!got.ok() || *got != c || !nodes[n]->Unref(put->digest).ok()) {
            ADD_FAILURE() << got.status().ToString();
            ++failures;
          }
        }
      }
      if (--writers == 0) done = true;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(deleted.load(), 0u) << "the collectors never raced the writers";
  std::printf("chunks deleted while the writers ran: %llu\n",
              static_cast<unsigned long long>(deleted.load()));
  ASSERT_TRUE(nodes[0]->Gc().ok());
  EXPECT_EQ(nodes[0]->Stats()->chunks, 0u);
  auto client = S3Client::Open(o);
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE(Keys(**client, "chunks/").empty());
}

INSTANTIATE_TEST_SUITE_P(Rows, S3TwoNodesTest, ::testing::Values("memory", "postgresql"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace deltastore
