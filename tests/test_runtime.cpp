// LibTorch is linked from the venv's torch wheel and usable from the engine.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "introspect/core/runtime.h"

TEST(Runtime, ThreadsAreSetExplicitly) {
  EXPECT_EQ(introspect::core::init_torch(2), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_GE(introspect::core::init_torch(0), 1);
}

TEST(Runtime, LibTorchComputes) {
  const at::Tensor a = at::arange(6, at::kFloat).reshape({2, 3});
  const at::Tensor b = at::ones({3, 1});
  const at::Tensor c = at::matmul(a, b);
  EXPECT_FLOAT_EQ(c[0][0].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(c[1][0].item<float>(), 12.0f);
  EXPECT_EQ(introspect::core::torch_version().rfind("2.", 0), 0u);
}
