#include "common/status.h"

#include <gtest/gtest.h>

#include "common/sha256.h"

namespace deltastore {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("odd");
  return x / 2;
}

StatusOr<int> Quarter(int x) {
  DS_ASSIGN_OR_RETURN(int h, Half(x));
  DS_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, OkAndErrors) {
  EXPECT_TRUE(OkStatus().ok());
  Status s = NotFound("model x");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: model x");
  EXPECT_EQ(s.Annotate("get").message(), "get: model x");
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256::Of("").Hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.Finish().Hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, ParseDigest) {
  auto d = Sha256::Of("abc");
  auto p = Digest::Parse(d.ToString());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, d);
  EXPECT_FALSE(Digest::Parse("sha256:xyz").ok());
  EXPECT_FALSE(Digest::Parse(std::string(64, 'g')).ok());
}

}  // namespace
}  // namespace deltastore
