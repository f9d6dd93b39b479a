// What only the S3 chunk store has: its URL, a server that goes away and comes back, credentials it
// refuses, bytes changed in the bucket behind its back, and two stores (two nodes) sharing one bucket
// and one set of reference rows while one collects garbage and the other puts the same chunks.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/s3_client.h"
#include "storage/stores.h"
#include "tests/storage/test_servers.h"

namespace deltastore {
namespace {

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
  EXPECT_EQ(ParseS3Url("s3://b?endpoint=ftp://x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseS3Url("s3://b?colour=red").status().code(), StatusCode::kInvalidArgument);
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  auto missing = ParseS3Url("s3://b?endpoint=http://127.0.0.1:1");
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

TEST(S3StoreTest, BytesChangedInTheBucketAreRefusedAsCorruption) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  auto store = OpenS3ChunkStore(o, NewMemoryMetaStore());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const std::string data(10000, 'x');
  auto put = (*store)->Put(data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  auto client = S3Client::Open(o);
  ASSERT_TRUE(client.ok());
  const std::string hex = put->digest.Hex();
  std::string changed = data;
  changed[5000] = 'y';
  ASSERT_TRUE((*client)->Put("chunks/" + hex.substr(0, 2) + "/" + hex, changed).ok());
  EXPECT_EQ((*store)->Get(put->digest).status().code(), StatusCode::kCorruption);
  // The listing shows the object where docs/s3_layout.md says it is.
  std::vector<std::string> keys;
  ASSERT_TRUE((*client)
                  ->List("chunks/",
                         [&](std::string_view k, uint64_t size) {
                           keys.emplace_back(k);
                           EXPECT_EQ(size, data.size());
                         })
                  .ok());
  EXPECT_EQ(keys, std::vector<std::string>{"chunks/" + hex.substr(0, 2) + "/" + hex});
}

// The server stops: requests fail with STORE_UNAVAILABLE after their retries; it starts again on the
// same data: the same store object works, and what was stored before is there.
TEST(S3StoreTest, ServerRestartFailsRequestsThenRecovers) {
  auto& server = S3TestServer::Get();
  auto store = OpenS3ChunkStore(server.FreshPrefix(), NewMemoryMetaStore());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto before = (*store)->Put("stored before the crash");
  ASSERT_TRUE(before.ok());
  server.Kill();
  auto during = (*store)->Get(before->digest);
  EXPECT_EQ(during.status().reason(), Reason::kStoreUnavailable) << during.status().ToString();
  server.Start();
  auto after = (*store)->Get(before->digest);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(*after, "stored before the crash");
  EXPECT_TRUE((*store)->Put("stored after the restart").ok());
}

// Two nodes: one keeps dropping and collecting chunks while the other puts the same chunks again.
// Whatever the interleaving, a chunk with a reference is never deleted.
TEST(S3StoreTest, GcOnOneNodeNeverDeletesAChunkTheOtherJustReferenced) {
  S3Options o = S3TestServer::Get().FreshPrefix();
  std::shared_ptr<MetaStore> rows = NewMemoryMetaStore();  // the shared metadata store
  auto a = OpenS3ChunkStore(o, rows);
  auto b = OpenS3ChunkStore(o, rows);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::string> chunks;
  for (int i = 0; i < 8; ++i) chunks.push_back("chunk " + std::to_string(i) + std::string(3000, 'a' + i));
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::thread collector([&] {
    while (!done) {
      if (!(*a)->Gc().ok()) ++failures;
    }
  });
  for (int round = 0; round < 15; ++round) {
    for (const auto& c : chunks) {
      auto put = (*b)->Put(c);
      ASSERT_TRUE(put.ok()) << put.status().ToString();
      // Referenced now: readable from either node, whatever the collector does.
      auto got = (*a)->Get(put->digest);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, c);
      ASSERT_TRUE((*b)->Unref(put->digest).ok());
    }
  }
  done = true;
  collector.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE((*a)->Gc().ok());
  EXPECT_EQ((*a)->Stats()->chunks, 0u);
}

}  // namespace
}  // namespace deltastore
