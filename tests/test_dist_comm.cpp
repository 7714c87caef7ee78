// The communicator's collectives and the distributed AdamW, run twice by ctest: as one process (the single-rank
// engine) and under `mpirun -np 2` (MPI). The optimizer is checked against LibTorch's own AdamW and
// clip_grad_norm_ stepping on the summed gradients; its saved state re-loads into the other ZeRO stage.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "introspect/dist/communicator.h"
#include "introspect/dist/optimizer.h"
#include "test_util.h"

namespace dist = introspect::dist;
namespace fs = std::filesystem;
using introspect::testing::ScratchDir;

namespace {

dist::Communicator& comm() {
  static const auto c = dist::from_environment(60);
  return *c;
}

}  // namespace

TEST(Communicator, WorldComesFromTheLauncher) {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_EQ(comm().world_size(), size ? std::atoi(size) : 1);
  EXPECT_EQ(comm().backend(), size ? "mpi" : "single");
  EXPECT_GE(comm().rank(), 0);
  EXPECT_LT(comm().rank(), comm().world_size());
  EXPECT_EQ(comm().local_size(), comm().world_size());  // one host here
}

TEST(Communicator, AllReduceSumMaxMin) {
  const int r = comm().rank(), w = comm().world_size();
  std::vector<float> f{1.f + r, -2.f * r, 0.5f};
  comm().all_reduce(f.data(), f.size(), dist::DType::kFloat32, dist::ReduceOp::kSum);
  EXPECT_FLOAT_EQ(f[0], w + w * (w - 1) / 2.f);
  EXPECT_FLOAT_EQ(f[1], -1.f * w * (w - 1));
  EXPECT_FLOAT_EQ(f[2], 0.5f * w);
  int64_t big = 1000 + r;
  comm().all_reduce(&big, 1, dist::DType::kInt64, dist::ReduceOp::kMax);
  EXPECT_EQ(big, 1000 + w - 1);
  double small = 3.0 - r;
  comm().all_reduce(&small, 1, dist::DType::kFloat64, dist::ReduceOp::kMin);
  EXPECT_DOUBLE_EQ(small, 3.0 - (w - 1));
  EXPECT_DOUBLE_EQ(dist::all_reduce_sum(comm(), 0.25), 0.25 * w);
}

TEST(Communicator, ReduceScatterAllGatherBroadcast) {
  const int r = comm().rank(), w = comm().world_size();
  const size_t block = 3;
  std::vector<double> send(block * w), mine(block);
  for (size_t i = 0; i < send.size(); ++i) send[i] = static_cast<double>(i) * (r + 1);
  comm().reduce_scatter(send.data(), mine.data(), block, dist::DType::kFloat64, dist::ReduceOp::kSum);
  const double ranks_sum = w * (w + 1) / 2.0;  // sum of (r + 1)
  for (size_t i = 0; i < block; ++i) EXPECT_DOUBLE_EQ(mine[i], static_cast<double>(r * block + i) * ranks_sum);

  std::vector<int64_t> gathered(2 * w);
  const int64_t pair[2] = {r, 10 * r};
  comm().all_gather(pair, gathered.data(), 2, dist::DType::kInt64);
  for (int k = 0; k < w; ++k) {
    EXPECT_EQ(gathered[2 * k], k);
    EXPECT_EQ(gathered[2 * k + 1], 10 * k);
  }

  const int root = w - 1;
  std::vector<uint8_t> bytes(5, static_cast<uint8_t>(r));
  comm().broadcast(bytes.data(), bytes.size(), dist::DType::kUInt8, root);
  for (auto b : bytes) EXPECT_EQ(b, root);
  comm().barrier();
}

TEST(Communicator, StringsOfUnequalLength) {
  const int r = comm().rank(), w = comm().world_size();
  const auto all = dist::all_gather_strings(comm(), std::string(static_cast<size_t>(r * 3), 'x') + "|" +
                                                        std::to_string(r));
  ASSERT_EQ(static_cast<int>(all.size()), w);
  for (int k = 0; k < w; ++k) EXPECT_EQ(all[k], std::string(static_cast<size_t>(k * 3), 'x') + "|" + std::to_string(k));
  EXPECT_EQ(dist::broadcast_string(comm(), r == 0 ? "from rank 0" : "ignored"), "from rank 0");
  EXPECT_EQ(dist::broadcast_string(comm(), ""), "");
}

TEST(Communicator, TimeoutNamesTheRankItWaitedFor) {
  if (comm().world_size() < 2) GTEST_SKIP() << "needs mpirun -np 2";
  // A communicator of its own with a 1 s deadline: rank 1 joins the barrier 2 s late.
  auto c = dist::from_environment(1.0);
  if (c->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    c->barrier();  // meets the barrier rank 0 gave up on, so nothing is left pending
    return;
  }
  try {
    c->barrier();
    FAIL() << "the barrier should have timed out";
  } catch (const dist::CollectiveError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rank 0/2: collective #"), std::string::npos) << m;
    EXPECT_NE(m.find("barrier"), std::string::npos) << m;
    EXPECT_NE(m.find("dist.timeout_s=1 s"), std::string::npos) << m;
    EXPECT_NE(m.find("rank 1 (pid "), std::string::npos) << m;
    EXPECT_NE(m.find("is alive but did not join"), std::string::npos) << m;
  }
}

namespace {

std::vector<torch::Tensor> make_params() {
  torch::manual_seed(7);
  return {torch::randn({7, 5}), torch::randn({13}), torch::randn({3, 3, 3})};
}

// Rank k's gradient of step s: every rank can compute all of them, so each can also build the reference sum.
std::vector<torch::Tensor> rank_grads(const std::vector<torch::Tensor>& params, int k, int s) {
  torch::manual_seed(1000 * s + k);
  std::vector<torch::Tensor> g;
  for (const auto& p : params) g.push_back(torch::randn(p.sizes()) * (s == 1 ? 10.0 : 0.1));  // step 1 is clipped
  return g;
}

// LibTorch's AdamW and clip_grad_norm_ on the summed gradients: the single-process reference.
struct Reference {
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::AdamW> adam;
  Reference() {
    for (auto& p : make_params()) params.push_back(p.clone().requires_grad_(true));
    adam = std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  }
  double step(int s, int world, double max_norm, double lr) {
    for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = torch::zeros_like(params[i]);
    for (int k = 0; k < world; ++k) {
      const auto g = rank_grads(params, k, s);
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() += g[i];
    }
    const double norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
    for (auto& group : adam->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    adam->step();
    return norm;
  }
};

void set_grads(std::vector<torch::Tensor>& params, int rank, int s) {
  const auto g = rank_grads(params, rank, s);
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = g[i].clone();
}

double max_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

}  // namespace

TEST(DistributedAdamW, MatchesLibTorchAdamWOnTheSummedGradients) {
  const int w = comm().world_size();
  for (int zero : {0, 1}) {
    auto params = make_params();
    // 16-element buckets: the 75 parameters travel in several buckets, the last one partial.
    dist::DistributedAdamW opt(params, {0.9, 0.999, 1e-8, 0.1}, comm(), zero, 64.0 / (1 << 20));
    EXPECT_EQ(opt.numel(), 75);
    EXPECT_EQ(opt.state_numel(), zero ? (75 + w - 1) / w : 75);
    Reference ref;
    for (int s = 0; s < 4; ++s) {
      set_grads(params, comm().rank(), s);
      const auto r = opt.step(/*max_norm=*/5.0, /*lr=*/1e-2);
      const double ref_norm = ref.step(s, w, 5.0, 1e-2);
      EXPECT_TRUE(r.applied);
      EXPECT_NEAR(r.grad_norm, ref_norm, 1e-4 * ref_norm) << "step " << s;
      EXPECT_LT(max_diff(params, ref.params), 1e-6) << "zero_stage " << zero << " step " << s;
      for (const auto& p : params) EXPECT_FALSE(p.grad().defined());
    }
    EXPECT_GT(max_diff(params, make_params()), 1e-2);  // the steps moved the parameters
  }
}

TEST(DistributedAdamW, NonFiniteGradientIsDroppedOnEveryRank) {
  auto params = make_params();
  const auto before = make_params();
  dist::DistributedAdamW opt(params, {}, comm(), 1, 25);
  set_grads(params, comm().rank(), 0);
  if (comm().rank() == comm().world_size() - 1) params[1].mutable_grad()[3] = std::nanf("");
  const auto r = opt.step(1.0, 1e-2);
  EXPECT_FALSE(r.applied);
  EXPECT_FALSE(std::isfinite(r.grad_norm));
  EXPECT_EQ(max_diff(params, before), 0.0);
}

TEST(DistributedAdamW, StateSavedUnderOneStageLoadsUnderTheOther) {
  std::unique_ptr<ScratchDir> scratch;
  if (comm().rank() == 0) scratch = std::make_unique<ScratchDir>();
  const fs::path dir = dist::broadcast_string(comm(), scratch ? scratch->path().string() : "");
  for (int saved : {1, 0}) {
    const int loaded = 1 - saved;
    auto params = make_params();
    Reference ref;
    {
      dist::DistributedAdamW opt(params, {0.9, 0.999, 1e-8, 0.1}, comm(), saved, 64.0 / (1 << 20));
      for (int s = 0; s < 2; ++s) {
        set_grads(params, comm().rank(), s);
        opt.step(5.0, 1e-2);
        ref.step(s, comm().world_size(), 5.0, 1e-2);
      }
      opt.save(dir / ("stage" + std::to_string(saved)));
      comm().barrier();
    }
    // A fresh optimizer under the other stage, on the saved weights, continues as the reference does.
    auto resumed = make_params();
    for (size_t i = 0; i < resumed.size(); ++i) resumed[i].copy_(params[i]);
    dist::DistributedAdamW opt(resumed, {0.9, 0.999, 1e-8, 0.1}, comm(), loaded, 25);
    opt.load(dir / ("stage" + std::to_string(saved)));
    for (int s = 2; s < 4; ++s) {
      set_grads(resumed, comm().rank(), s);
      opt.step(5.0, 1e-2);
      ref.step(s, comm().world_size(), 5.0, 1e-2);
    }
    EXPECT_LT(max_diff(resumed, ref.params), 1e-6) << "saved with zero_stage " << saved;
  }
  // State for other parameters is refused, naming the file.
  std::vector<torch::Tensor> other{torch::zeros({5})};
  dist::DistributedAdamW wrong(other, {}, comm(), 0, 25);
  try {
    wrong.load(dir / "stage1");
    FAIL() << "loading state for 75 parameters into 5 should throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("layout.json: holds state for 75 parameters, the model has 5"),
              std::string::npos)
        << e.what();
  }
  comm().barrier();
}

// With more ranks than parameters, the last ranks' ZeRO shards lie wholly in the padding: their ranges must be
// empty (not negative) in layout.json, and the state must load back under either stage. ctest runs this under
// mpirun -np 3 as well (dist_optimizer_padding_mpirun_np3).
TEST(DistributedAdamW, ShardsWhollyInThePaddingSaveAndLoad) {
  std::unique_ptr<ScratchDir> scratch;
  if (comm().rank() == 0) scratch = std::make_unique<ScratchDir>();
  const fs::path dir = dist::broadcast_string(comm(), scratch ? scratch->path().string() : "");
  const auto grad_at = [](int step) { return torch::tensor({0.25f * static_cast<float>(step + 1)}); };
  std::vector<torch::Tensor> params{torch::tensor({0.5f})};
  dist::DistributedAdamW sharded(params, {}, comm(), 1, 25);
  params[0].mutable_grad() = grad_at(0) / comm().world_size();
  ASSERT_TRUE(sharded.step(0, 1e-2).applied);
  sharded.save(dir / "opt");
  comm().barrier();
  if (comm().rank() == 0) {
    const auto layout = nlohmann::json::parse(introspect::testing::read_file(dir / "opt" / "layout.json"));
    ASSERT_EQ(layout.at("shards").size(), static_cast<size_t>(comm().world_size()));
    for (const auto& shard : layout.at("shards"))
      EXPECT_GE(shard.at("end").get<int64_t>(), shard.at("begin").get<int64_t>()) << shard.dump();
  }
  for (int stage : {0, 1}) {
    std::vector<torch::Tensor> resumed{params[0].clone()};
    dist::DistributedAdamW loaded(resumed, {}, comm(), stage, 25);
    ASSERT_NO_THROW(loaded.load(dir / "opt")) << "stage " << stage;
    // The resumed optimizer continues exactly as a copy of the original would.
    std::vector<torch::Tensor> original{params[0].clone()};
    dist::DistributedAdamW again(original, {}, comm(), 1, 25);
    again.load(dir / "opt");
    resumed[0].mutable_grad() = grad_at(1) / comm().world_size();
    original[0].mutable_grad() = grad_at(1) / comm().world_size();
    loaded.step(0, 1e-2);
    again.step(0, 1e-2);
    EXPECT_NEAR(resumed[0].item<float>(), original[0].item<float>(), 1e-7) << "stage " << stage;
    EXPECT_NE(resumed[0].item<float>(), 0.5f);
  }
  comm().barrier();
}
