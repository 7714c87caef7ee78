// The CUDA kernels against their CPU twins, and the twins against the LibTorch functions they stand in for.
// The twin tests always run; the GPU tests report themselves skipped where LibTorch sees no CUDA device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "introspect/algo/core_algos.h"
#include "introspect/g2rl/g2rl.h"
#include "introspect/gpu/decode_graph.h"
#include "introspect/gpu/ops.h"
#include "introspect/kernels/feature_similarity.h"
#include "introspect/kernels/fused_logprob.h"
#include "introspect/kernels/grouped_advantage.h"
#include "introspect/model/decoder.h"

namespace k = introspect::kernels;
namespace gpu = introspect::gpu;
using introspect::model::ModelArch;

namespace {

#define REQUIRE_GPU()                                                         \
  do {                                                                        \
    std::string why;                                                          \
    if (!gpu::cuda_usable(&why)) GTEST_SKIP() << "no usable GPU: " << why;    \
  } while (0)

// Group sizes with a lone sample and a group wider than a warp.
const std::vector<int64_t> kGroupSizes{8, 1, 5, 40, 16, 2, 8};

torch::Tensor offsets_of(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> off{0};
  for (auto s : sizes) off.push_back(off.back() + s);
  return torch::tensor(off, torch::kLong);
}
torch::Tensor group_ids_of(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> ids;
  for (size_t g = 0; g < sizes.size(); ++g) ids.insert(ids.end(), sizes[g], static_cast<int64_t>(g));
  return torch::tensor(ids, torch::kLong);
}
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kDouble) - b.to(torch::kCPU, torch::kDouble)).abs().max().item<double>();
}
double max_rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  const auto bd = b.to(torch::kCPU, torch::kDouble);
  return max_abs_diff(a, b) / std::max(bd.abs().max().item<double>(), 1e-12);
}

std::vector<k::GroupAdvantageOptions> all_advantage_options() {
  std::vector<k::GroupAdvantageOptions> out;
  for (bool norm : {true, false})
    for (bool unbiased : {true, false})
      for (bool inside : {true, false}) out.push_back({norm, unbiased, 1e-4, inside});
  return out;
}

// Scores with repeats (0/1 rewards) and a zero-variance group, as GRPO sees them.
torch::Tensor binary_scores(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto s = (torch::rand({n}) > 0.5).to(torch::kFloat);
  s.narrow(0, 0, 8).fill_(1.0f);  // the first group: all correct
  return s;
}

// ---- twins against the LibTorch functions ----------------------------------------------------------------

TEST(KernelTwins, GroupedAdvantageMatchesGrpoAdvantages) {
  const auto off = offsets_of(kGroupSizes);
  const int64_t n = off[-1].item<int64_t>();
  const auto scores = binary_scores(n, 3) + 0.1f * torch::randn({n});
  for (const auto& o : all_advantage_options()) {
    auto got = torch::empty({n});
    k::grouped_advantage_reference(scores.data_ptr<float>(), off.data_ptr<int64_t>(), off.size(0) - 1,
                                   got.data_ptr<float>(), o);
    introspect::algo::AdvantageOptions ao;
    ao.norm_by_std = o.norm_by_std, ao.unbiased_std = o.unbiased_std, ao.epsilon = o.epsilon;
    ao.epsilon_inside_sqrt = o.epsilon_inside_sqrt;
    const auto want = introspect::algo::grpo_advantages(scores, group_ids_of(kGroupSizes), ao);
    EXPECT_LT(max_abs_diff(got, want), 1e-6) << "norm " << o.norm_by_std << " unbiased " << o.unbiased_std;
  }
}

TEST(KernelTwins, FeatureSimilarityMatchesBatchNovelty) {
  torch::manual_seed(5);
  const auto off = offsets_of(kGroupSizes);
  const int64_t n = off[-1].item<int64_t>(), dim = 33;
  auto features = torch::randn({n, dim});
  features[3] = features[1] * 2.0;  // parallel pair inside a group: cos = 1
  const auto rewards = binary_scores(n, 9) * 2 - 1;
  int64_t gram_size = 0;
  std::vector<int64_t> gram_off{0};
  for (auto m : kGroupSizes) gram_off.push_back(gram_size += m * m);
  auto gram = torch::empty({gram_size}), nu = torch::empty({n});
  k::feature_similarity_reference(features.data_ptr<float>(), off.data_ptr<int64_t>(), gram_off.data(),
                                  off.size(0) - 1, dim, rewards.data_ptr<float>(), 1e-8, gram.data_ptr<float>(),
                                  nu.data_ptr<float>());
  const auto want = introspect::g2rl::batch_novelty(features, group_ids_of(kGroupSizes), rewards, 1e-8);
  EXPECT_LT(max_abs_diff(nu, want), 1e-6);
  EXPECT_FLOAT_EQ(nu[8].item<float>(), 1.0f);                // the lone response
  EXPECT_NEAR(gram[1 * 8 + 3].item<float>(), 1.0f, 1e-6);    // the parallel pair
  const auto unit = features / features.norm(2, 1, true);
  EXPECT_LT(max_abs_diff(gram.narrow(0, 0, 64).view({8, 8}), unit.narrow(0, 0, 8).mm(unit.narrow(0, 0, 8).t())), 1e-6);
}

TEST(KernelTwins, RowStatsMatchLogSoftmax) {
  torch::manual_seed(11);
  const int64_t rows = 7, vocab = 1000;
  const auto logits = torch::randn({rows, vocab}) * 4;
  const auto targets = torch::randint(vocab, {rows}, torch::kLong);
  auto lse = torch::empty({rows}), logp = torch::empty({rows}), entropy = torch::empty({rows});
  k::logits_row_stats_reference(logits.data_ptr<float>(), targets.data_ptr<int64_t>(), rows, vocab,
                                lse.data_ptr<float>(), logp.data_ptr<float>(), entropy.data_ptr<float>());
  const auto ls = torch::log_softmax(logits.to(torch::kDouble), 1);
  EXPECT_LT(max_abs_diff(lse, torch::logsumexp(logits.to(torch::kDouble), 1)), 1e-5);
  EXPECT_LT(max_abs_diff(logp, ls.gather(1, targets.unsqueeze(1)).squeeze(1)), 1e-5);
  EXPECT_LT(max_abs_diff(entropy, -(ls.exp() * ls).sum(1)), 1e-5);
}

TEST(KernelTwins, ColumnSumsMatchSegmentedSoftmaxSums) {
  torch::manual_seed(12);
  const int64_t rows = 9, vocab = 300;
  const auto logits = torch::randn({rows, vocab}) * 3;
  const auto segment = torch::tensor({0, 0, 0, -1, 1, 1, 0, 2, 2}, torch::kLong);  // a masked row, a revisit
  const auto lse = torch::logsumexp(logits, 1).contiguous();
  auto got = torch::zeros({3, vocab});
  k::softmax_column_sums_reference(logits.data_ptr<float>(), lse.data_ptr<float>(), segment.data_ptr<int64_t>(),
                                   rows, vocab, got.data_ptr<float>());
  const auto p = torch::softmax(logits, 1);
  auto want = torch::zeros({3, vocab});
  for (int64_t r = 0; r < rows; ++r)
    if (segment[r].item<int64_t>() >= 0) want[segment[r].item<int64_t>()] += p[r];
  EXPECT_LT(max_abs_diff(got, want), 1e-6);
}

TEST(KernelTwins, BackwardMatchesAutograd) {
  torch::manual_seed(13);
  const int64_t rows = 5, vocab = 200;
  const double temperature = 0.7;
  const auto x = (torch::randn({rows, vocab}, torch::kDouble) * 2).requires_grad_(true);
  const auto targets = torch::randint(vocab, {rows}, torch::kLong);
  const auto g_logp = torch::randn({rows}), g_ent = torch::randn({rows});
  const auto ls = torch::log_softmax(x / temperature, 1);
  const auto logp = ls.gather(1, targets.unsqueeze(1)).squeeze(1);
  const auto entropy = -(ls.exp() * ls).sum(1);
  ((logp * g_logp.to(torch::kDouble)).sum() + (entropy * g_ent.to(torch::kDouble)).sum()).backward();
  auto z = (x.detach() / temperature).to(torch::kFloat).contiguous();
  const auto lse = torch::logsumexp(z, 1).contiguous(), ent = entropy.detach().to(torch::kFloat).contiguous();
  k::logits_backward_reference(z.data_ptr<float>(), lse.data_ptr<float>(), ent.data_ptr<float>(),
                               targets.data_ptr<int64_t>(), g_logp.data_ptr<float>(), g_ent.data_ptr<float>(), rows,
                               vocab, static_cast<float>(1.0 / temperature));
  EXPECT_LT(max_abs_diff(z, x.grad()), 1e-6);
}

// ---- kernels against their twins (GPU) ---------------------------------------------------------------------

TEST(GpuKernels, GroupedAdvantageMatchesItsTwin) {
  REQUIRE_GPU();
  std::vector<int64_t> sizes;
  for (int i = 0; i < 3000; ++i) sizes.push_back(1 + (i * 7) % 70);  // 1..70, thousands of groups
  const auto off = offsets_of(sizes);
  const int64_t n = off[-1].item<int64_t>();
  torch::manual_seed(21);
  const auto scores = torch::randn({n});
  for (const auto& o : all_advantage_options()) {
    auto want = torch::empty({n});
    k::grouped_advantage_reference(scores.data_ptr<float>(), off.data_ptr<int64_t>(), off.size(0) - 1,
                                   want.data_ptr<float>(), o);
    const auto got = gpu::grouped_advantages(scores.cuda(), off.cuda(), o);
    EXPECT_LT(max_rel_diff(got, want), 1e-5);
  }
}

TEST(GpuKernels, FeatureSimilarityMatchesItsTwin) {
  REQUIRE_GPU();
  std::vector<int64_t> sizes{16, 1, 64, 3, 16, 100};
  const auto off = offsets_of(sizes);
  const int64_t n = off[-1].item<int64_t>(), dim = 2048;
  torch::manual_seed(22);
  const auto features = torch::randn({n, dim});
  const auto rewards = (torch::rand({n}) > 0.5).to(torch::kFloat) * 2 - 1;
  const auto [gram, nu] = gpu::feature_similarity(features.cuda(), off, rewards.cuda());
  std::vector<int64_t> gram_off{0};
  for (auto m : sizes) gram_off.push_back(gram_off.back() + m * m);
  auto want_gram = torch::empty({gram_off.back()}), want_nu = torch::empty({n});
  k::feature_similarity_reference(features.data_ptr<float>(), off.data_ptr<int64_t>(), gram_off.data(),
                                  off.size(0) - 1, dim, rewards.data_ptr<float>(), 1e-8, want_gram.data_ptr<float>(),
                                  want_nu.data_ptr<float>());
  EXPECT_LT(max_abs_diff(gram, want_gram), 1e-5);
  EXPECT_LT(max_abs_diff(nu, want_nu), 1e-5);
}

TEST(GpuKernels, RowStatsColumnSumsAndBackwardMatchTheirTwins) {
  REQUIRE_GPU();
  torch::manual_seed(23);
  const int64_t rows = 150, vocab = 151936 / 8 + 3;  // not a multiple of the block width
  auto logits = (torch::randn({rows, vocab}) * 3).contiguous();
  // Peaked rows, as a confident model gives: entropies of ~1e-12 and 0.58 next to log-sum-exps of 40 and 60.
  logits[0].fill_(0.0f), logits[0][7] = 40.0f;
  logits[1].fill_(-5.0f), logits[1][3] = 60.0f, logits[1][4] = 59.0f;
  const auto targets = torch::randint(vocab, {rows}, torch::kLong);
  auto segment = torch::arange(rows, torch::kLong).div(40, "floor");
  segment.narrow(0, 10, 5).fill_(-1);
  auto lse = torch::empty({rows}), logp = torch::empty({rows}), ent = torch::empty({rows});
  k::logits_row_stats_reference(logits.data_ptr<float>(), targets.data_ptr<int64_t>(), rows, vocab,
                                lse.data_ptr<float>(), logp.data_ptr<float>(), ent.data_ptr<float>());
  const auto d_logits = logits.cuda(), d_targets = targets.cuda(), d_segment = segment.cuda();
  auto d_lse = torch::empty({rows}, d_logits.options()), d_logp = torch::empty_like(d_lse), d_ent = torch::empty_like(d_lse);
  k::logits_row_stats(d_logits.data_ptr<float>(), d_targets.data_ptr<int64_t>(), rows, vocab, d_lse.data_ptr<float>(),
                      d_logp.data_ptr<float>(), d_ent.data_ptr<float>(), nullptr);
  EXPECT_LT(max_abs_diff(d_lse, lse), 1e-5 * lse.abs().max().item<double>());
  EXPECT_LT(max_abs_diff(d_logp, logp), 1e-4);  // |logp| ~ 20: fp32 relative 1e-5 of the lse
  EXPECT_LT(max_rel_diff(d_ent, ent), 1e-5);
  // Absolute on the peaked rows: entropy as lse − E[z] would cancel two numbers near 60 (fp32 spacing 3.8e-6).
  EXPECT_LT(max_abs_diff(d_ent.narrow(0, 0, 2), ent.narrow(0, 0, 2)), 5e-7) << d_ent.narrow(0, 0, 2).cpu();
  EXPECT_GE(d_ent.min().item<float>(), 0.0f);

  auto sums = torch::zeros({4, vocab});
  k::softmax_column_sums_reference(logits.data_ptr<float>(), lse.data_ptr<float>(), segment.data_ptr<int64_t>(), rows,
                                   vocab, sums.data_ptr<float>());
  auto d_sums = torch::zeros({4, vocab}, d_logits.options());
  const auto lse_dev = lse.cuda(), ent_dev = ent.cuda();
  k::softmax_column_sums(d_logits.data_ptr<float>(), lse_dev.data_ptr<float>(), d_segment.data_ptr<int64_t>(), rows,
                         vocab, d_sums.data_ptr<float>(), nullptr);
  EXPECT_LT(max_rel_diff(d_sums, sums), 1e-5);

  const auto g = torch::randn({rows}), ge = torch::randn({rows});
  const auto g_dev = g.cuda(), ge_dev = ge.cuda();
  auto dz = logits.clone();
  k::logits_backward_reference(dz.data_ptr<float>(), lse.data_ptr<float>(), ent.data_ptr<float>(),
                               targets.data_ptr<int64_t>(), g.data_ptr<float>(), ge.data_ptr<float>(), rows, vocab, 0.5f);
  auto d_dz = d_logits.clone();
  auto d_bf16 = torch::empty({rows, vocab}, d_logits.options().dtype(torch::kBFloat16));
  k::logits_backward(d_dz.data_ptr<float>(), lse_dev.data_ptr<float>(), ent_dev.data_ptr<float>(),
                     d_targets.data_ptr<int64_t>(), g_dev.data_ptr<float>(), ge_dev.data_ptr<float>(), rows, vocab, 0.5f,
                     d_bf16.data_ptr(), nullptr);
  EXPECT_LT(max_rel_diff(d_dz, dz), 1e-5);
  EXPECT_LT(max_rel_diff(d_bf16, dz), 1e-2);  // bf16 has 8 bits of mantissa
}

// The autograd function against the LibTorch CPU path it replaces on a GPU.
struct LmHeadCase {
  torch::Tensor hidden, weight, targets;
};
LmHeadCase lm_head_case(int64_t n, int64_t dim, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({n, dim}), torch::randn({vocab, dim}) * 0.05, torch::randint(vocab, {n}, torch::kLong)};
}

TEST(GpuKernels, FusedLogProbMatchesTheChunkedPathWithGradients) {
  REQUIRE_GPU();
  const auto c = lm_head_case(300, 64, 5003, 31);
  const double temperature = 0.8;
  const auto g_logp = torch::randn({300}), g_ent = torch::randn({300});
  auto h_cpu = c.hidden.clone().requires_grad_(true), w_cpu = c.weight.clone().requires_grad_(true);
  const auto [logp_cpu, ent_cpu] =
      introspect::model::chunked_token_logprobs_entropy(h_cpu, w_cpu, c.targets, temperature, 64);
  ((logp_cpu * g_logp).sum() + (ent_cpu * g_ent).sum()).backward();
  auto h = c.hidden.cuda().requires_grad_(true), w = c.weight.cuda().requires_grad_(true);
  // A small chunk budget forces several chunks, with a ragged last one.
  const auto [logp, ent] = gpu::fused_token_logprobs_entropy(h, w, c.targets.cuda(), temperature, 64 * 5003 * 4);
  ((logp * g_logp.cuda()).sum() + (ent * g_ent.cuda()).sum()).backward();
  EXPECT_LT(max_abs_diff(logp, logp_cpu), 1e-4);
  EXPECT_LT(max_rel_diff(ent, ent_cpu), 1e-5);
  EXPECT_LT(max_rel_diff(h.grad(), h_cpu.grad()), 1e-5);
  EXPECT_LT(max_rel_diff(w.grad(), w_cpu.grad()), 1e-5);
}

TEST(GpuKernels, FusedLogProbInBf16StaysWithinBf16Tolerance) {
  REQUIRE_GPU();
  const auto c = lm_head_case(256, 128, 4099, 32);
  const auto hb = c.hidden.to(torch::kBFloat16), wb = c.weight.to(torch::kBFloat16);
  // Reference: the same bf16-rounded operands in fp32.
  auto h_ref = hb.to(torch::kFloat).requires_grad_(true), w_ref = wb.to(torch::kFloat).requires_grad_(true);
  const auto [logp_ref, ent_ref] = introspect::model::chunked_token_logprobs_entropy(h_ref, w_ref, c.targets);
  (logp_ref.sum() + 0.5 * ent_ref.sum()).backward();
  auto h = hb.cuda().requires_grad_(true);
  auto w = c.weight.cuda().requires_grad_(true);  // fp32 master weight, cast to bf16 inside
  const auto [logp, ent] = gpu::fused_token_logprobs_entropy(h, w, c.targets.cuda());
  (logp.sum() + 0.5 * ent.sum()).backward();
  EXPECT_EQ(h.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(w.grad().scalar_type(), torch::kFloat);
  // Stated bf16 tolerance: logits accumulate in fp32, so only the bf16 rounding of d logits (2^-8) and of the
  // returned hidden gradient remains.
  EXPECT_LT(max_abs_diff(logp, logp_ref), 1e-3);
  EXPECT_LT(max_abs_diff(ent, ent_ref), 1e-3);
  EXPECT_LT(max_rel_diff(h.grad(), h_ref.grad()), 2e-2);
  EXPECT_LT(max_rel_diff(w.grad(), w_ref.grad()), 2e-2);
}

TEST(GpuKernels, FusedFeaturesMatchTheChunkedPath) {
  REQUIRE_GPU();
  const auto c = lm_head_case(200, 48, 3001, 33);
  auto segments = torch::arange(200, torch::kLong).div(50, "floor");
  const auto want = introspect::model::chunked_logprobs_and_features(c.hidden, c.weight, c.targets, segments, 4, 0.9, 64);
  const auto got = gpu::fused_logprobs_and_features(c.hidden.cuda(), c.weight.cuda(), c.targets.cuda(), segments.cuda(),
                                                    4, 0.9, 48 * 3001 * 4);
  EXPECT_LT(max_abs_diff(got.logp, want.logp), 1e-4);
  EXPECT_LT(max_rel_diff(got.entropy, want.entropy), 1e-5);
  EXPECT_LT(max_rel_diff(got.features, want.features), 1e-4);
  // Rows masked out (segment -1) count in no sequence: the same as leaving them out of the CPU call.
  auto masked = segments.clone();
  masked.narrow(0, 60, 20).fill_(-1);
  const auto kept = (masked >= 0).nonzero().squeeze(1);
  const auto want_kept = introspect::model::chunked_logprobs_and_features(
      c.hidden.index_select(0, kept), c.weight, c.targets.index_select(0, kept), masked.index_select(0, kept), 4, 0.9, 64);
  const auto got_masked = gpu::fused_logprobs_and_features(c.hidden.cuda(), c.weight.cuda(), c.targets.cuda(),
                                                           masked.cuda(), 4, 0.9);
  EXPECT_LT(max_rel_diff(got_masked.features, want_kept.features), 1e-4);
  // Out-of-range ids are refused before any kernel reads with them.
  EXPECT_THROW(gpu::fused_logprobs_and_features(c.hidden.cuda(), c.weight.cuda(), c.targets.cuda(), segments.cuda(), 3),
               c10::Error);
  auto bad_targets = c.targets.clone();
  bad_targets[5] = 3001;
  EXPECT_THROW(gpu::fused_token_logprobs_entropy(c.hidden.cuda(), c.weight.cuda(), bad_targets.cuda()), c10::Error);
}

// The decoder on CUDA (mask-free causal fast path, KV cache on the device) against the same weights on CPU.
TEST(GpuKernels, DecoderOnCudaMatchesCpu) {
  REQUIRE_GPU();
  ModelArch a;
  a.model_type = "qwen3";
  a.vocab_size = 97, a.hidden_size = 32, a.intermediate_size = 48, a.num_layers = 2, a.num_heads = 4;
  a.num_kv_heads = 2, a.head_dim = 16, a.qk_norm = true, a.tie_word_embeddings = true;
  auto cpu = introspect::model::CausalLM::random(a, 7);
  auto dev = introspect::model::CausalLM::random(a, 7);
  dev.to(torch::kCUDA);
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(97, {2, 12}, torch::kLong);
  const auto want = cpu.forward_padded(ids, torch::ones({2, 12}, torch::kLong)).logits;
  const auto got = dev.forward_padded(ids.cuda(), torch::ones({2, 12}, torch::kLong).cuda()).logits;
  EXPECT_LT(max_abs_diff(got, want), 1e-4);
  // Padded rows take the masked path.
  auto mask = torch::ones({2, 12}, torch::kLong);
  mask[1].narrow(0, 0, 3).fill_(0);
  EXPECT_LT(max_abs_diff(dev.forward_padded(ids.cuda(), mask.cuda()).logits, cpu.forward_padded(ids, mask).logits), 1e-4);
  // Cached decoding on the device: prefill 11 tokens, then one step.
  introspect::model::KVCache cache(a, 2, 16, torch::kFloat, torch::kCUDA);
  const auto pos = torch::arange(11, torch::kLong).repeat({2, 1}).cuda();
  const auto slots = torch::arange(2, torch::kLong).cuda();
  dev.forward_cached(ids.narrow(1, 0, 11).cuda(), pos, slots, cache, true);
  const auto step = dev.forward_cached(ids.narrow(1, 11, 1).cuda(), torch::full({2, 1}, 11, torch::kLong).cuda(), slots, cache);
  EXPECT_LT(max_abs_diff(step.logits.squeeze(1), want.select(1, 11)), 1e-4);
}

// Greedy tokens from the captured static step equal the eager cached loop's, row by row.
TEST(GpuKernels, GraphedDecoderMatchesEagerGreedy) {
  REQUIRE_GPU();
  ModelArch a;
  a.model_type = "qwen3";
  a.vocab_size = 97, a.hidden_size = 32, a.intermediate_size = 48, a.num_layers = 2, a.num_heads = 4;
  a.num_kv_heads = 2, a.head_dim = 16, a.qk_norm = true;
  auto model = introspect::model::CausalLM::random(a, 11);
  model.to(torch::kCUDA);
  torch::NoGradGuard no_grad;
  const int64_t batch = 3, prompt = 5, steps = 9;
  const auto ids = torch::randint(97, {batch, prompt}, torch::kLong).cuda();
  const auto pos = torch::arange(prompt, torch::kLong).repeat({batch, 1}).cuda();
  const auto slots = torch::arange(batch, torch::kLong).cuda();
  introspect::model::KVCache eager_cache(a, batch, 16, torch::kFloat, torch::kCUDA);
  auto next = model.forward_cached(ids, pos, slots, eager_cache, true).logits.argmax(-1);
  const auto first = next.clone();
  std::vector<torch::Tensor> eager;
  for (int64_t t = 0; t < steps; ++t) {
    next = model.forward_cached(next, torch::full({batch, 1}, prompt + t, torch::kLong).cuda(), slots, eager_cache)
               .logits.argmax(-1);
    eager.push_back(next);
  }
  introspect::model::KVCache cache(a, batch, 16, torch::kFloat, torch::kCUDA);
  model.forward_cached(ids, pos, slots, cache, true);
  introspect::gpu::GraphedDecoder graphed(model, cache, batch);
  const auto tokens = graphed.greedy(first, prompt, steps);
  EXPECT_TRUE(tokens.cpu().equal(torch::cat(eager, 1).cpu())) << tokens << torch::cat(eager, 1);
  // The positions must leave the scratch slot free.
  EXPECT_THROW(graphed.greedy(first, prompt, 16 - prompt), c10::Error);
}

}  // namespace
