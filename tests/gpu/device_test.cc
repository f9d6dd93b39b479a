#include "gpu/device.h"

#include <gtest/gtest.h>

namespace deltastore {
namespace {

TEST(DeviceTest, ProbesLibtorch) {
  auto d = ProbeComputeDevice();
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(d->name == "cpu" || d->name == "cuda:0");
  EXPECT_EQ(d->cuda, d->name != "cpu");
  EXPECT_GE(d->threads, 1);
  EXPECT_FALSE(d->torch_version.empty());
}

}  // namespace
}  // namespace deltastore
