// The generator: greedy equals full recompute and stories260K's golden ids, log-probs equal the training
// forward's, samples do not depend on batch size or on sharing a call with prompts of other sample counts,
// sampled frequencies match the filtered softmax (chi-square), and limits, stops and the KV budget behave.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "introspect/core/runtime.h"
#include "introspect/model/decoder.h"
#include "introspect/rollout/generator.h"
#include "introspect/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace introspect;
using model::CausalLM;
using model::ModelArch;
using rollout::Generator;
using rollout::Prompt;
using rollout::SamplingParams;
using ::testing::HasSubstr;

namespace {

const std::string kStories = std::string(INTROSPECT_SHARED_DIR) + "/data/models/stories260K";

ModelArch tiny(const std::string& type, int64_t vocab = 97) {
  ModelArch a;
  a.model_type = type;
  a.vocab_size = vocab;
  a.hidden_size = 32;
  a.intermediate_size = 48;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.head_dim = 8;
  a.attention_bias = type == "qwen2";
  a.qk_norm = type == "qwen3";
  a.eos_token_ids = {vocab - 1};
  return a;
}

// Random weights large enough that the next-token distribution is far from uniform.
CausalLM sharp_model(const ModelArch& a, uint64_t seed = 11) {
  auto m = CausalLM::random(a, seed);
  c10::NoGradGuard g;
  for (auto& [name, p] : m.named_parameters())
    if (p.dim() == 2) p.mul_(10.0);
  return m;
}

std::vector<Prompt> some_prompts(int64_t vocab, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Prompt> out;
  for (int i = 0; i < count; ++i) {
    Prompt p;
    for (int k = 0; k < 2 + i % 5; ++k) p.ids.push_back(static_cast<int32_t>(rng() % (vocab - 1)));
    out.push_back(p);
  }
  return out;
}

// Greedy by recomputing the full prefix at every step: the reference the cache must reproduce.
std::vector<int32_t> greedy_recompute(const CausalLM& m, std::vector<int32_t> seq, int64_t n, int32_t eos) {
  c10::NoGradGuard g;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const auto input = at::tensor(std::vector<int64_t>(seq.begin(), seq.end())).unsqueeze(0);
    const int32_t next = static_cast<int32_t>(m.forward_padded(input, at::ones_like(input)).logits[0][-1].argmax().item<int64_t>());
    out.push_back(next);
    seq.push_back(next);
    if (next == eos) break;
  }
  return out;
}

}  // namespace

class RolloutTest : public ::testing::Test {
 protected:
  void SetUp() override { core::init_torch(2); }
};

TEST_F(RolloutTest, Stories260KGoldenThroughTheGenerator) {
  const auto golden = nlohmann::json::parse(introspect::testing::read_file(kStories + "/greedy200.json"));
  const auto model = CausalLM::load(kStories);
  SamplingParams p;
  p.greedy = true;
  p.max_new_tokens = 200;
  const auto out = Generator(model, 4).generate({Prompt{{1}, -1}}, p);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].tokens, golden["greedy_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(out[0].finish, rollout::FinishReason::kLength);
}

TEST_F(RolloutTest, GreedyEqualsFullRecomputeUnderContinuousBatching) {
  for (const char* type : {"llama", "qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    const auto m = sharp_model(tiny(type));
    auto prompts = some_prompts(97, 7, 3);
    for (size_t i = 0; i < prompts.size(); ++i) prompts[i].max_new_tokens = 3 + 4 * static_cast<int64_t>(i);
    SamplingParams p;
    p.greedy = true;
    const auto out = Generator(m, 2).generate(prompts, p);  // 2 slots for 7 sequences of different lengths
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(out[i].tokens, greedy_recompute(m, prompts[i].ids, prompts[i].max_new_tokens, 96)) << "prompt " << i;
    }
  }
}

TEST_F(RolloutTest, LogprobsEqualTheTrainingForward) {
  const auto m = sharp_model(tiny("qwen3"));
  for (double temperature : {1.0, 0.7}) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = 20;  // truncation must not change the reported log-probs
    p.n = 3;
    p.max_new_tokens = 12;
    p.seed = 5;
    const auto prompts = some_prompts(97, 3, 9);
    const auto out = Generator(m, 4).generate(prompts, p);
    double worst = 0;
    for (const auto& s : out) {
      std::vector<int32_t> seq = prompts[s.prompt_index].ids;
      const int64_t L = static_cast<int64_t>(seq.size());
      seq.insert(seq.end(), s.tokens.begin(), s.tokens.end());
      c10::NoGradGuard g;
      const auto input = at::tensor(std::vector<int64_t>(seq.begin(), seq.end())).unsqueeze(0);
      const auto hidden = m.forward_padded(input, at::ones_like(input), false).hidden[0];
      const int64_t T = static_cast<int64_t>(s.tokens.size());
      const auto train_lp = model::chunked_token_logprobs(hidden.narrow(0, L - 1, T), m.lm_head_weight(),
                                                          input[0].narrow(0, L, T), temperature);
      worst = std::max(worst, (train_lp - at::tensor(s.logprobs)).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-5) << "temperature " << temperature;
  }
}

TEST_F(RolloutTest, SamplesDoNotDependOnBatchSize) {
  const auto m = sharp_model(tiny("llama"));
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.9;
  p.n = 4;
  p.max_new_tokens = 16;
  p.seed = 42;
  const auto prompts = some_prompts(97, 5, 1);
  const auto reference = Generator(m, 1).generate(prompts, p);
  for (int64_t slots : {3, 7, 64}) {
    const auto out = Generator(m, slots).generate(prompts, p);
    ASSERT_EQ(out.size(), reference.size());
    for (size_t k = 0; k < out.size(); ++k) {
      EXPECT_EQ(out[k].tokens, reference[k].tokens) << "slots " << slots << " sample " << k;
    }
  }
  // Different seeds give different samples, and samples of one prompt differ from each other.
  p.seed = 43;
  EXPECT_NE(Generator(m, 8).generate(prompts, p)[0].tokens, reference[0].tokens);
  EXPECT_NE(reference[0].tokens, reference[1].tokens);
}

// One call may mix prompts with their own sample counts (MASA's meta and solution groups share a batch): each
// prompt's samples are what a call of its own, on the same RNG streams, draws.
TEST_F(RolloutTest, PerPromptSampleCountsEqualSeparateCalls) {
  const auto m = sharp_model(tiny("llama"));
  SamplingParams p;
  p.temperature = 1.0;
  p.max_new_tokens = 12;
  p.seed = 7;
  auto prompts = some_prompts(97, 4, 3);
  const std::vector<int64_t> counts{2, 5, -1, 1};
  p.n = 3;  // what the prompt with n = -1 gets
  for (size_t i = 0; i < prompts.size(); ++i) {
    prompts[i].n = counts[i];
    prompts[i].stream = 10 + static_cast<int64_t>(i);
  }
  prompts[1].max_new_tokens = 4;
  const auto mixed = Generator(m, 5).generate(prompts, p);
  ASSERT_EQ(mixed.size(), 11u);
  size_t k = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = p;
    alone.n = counts[i] > 0 ? counts[i] : 3;
    auto single = prompts[i];
    single.n = -1;
    const auto ref = Generator(m, 2).generate({single}, alone);
    for (const auto& r : ref) {
      ASSERT_LT(k, mixed.size());
      EXPECT_EQ(mixed[k].prompt_index, static_cast<int64_t>(i));
      EXPECT_EQ(mixed[k].sample_index, r.sample_index);
      EXPECT_EQ(mixed[k].tokens, r.tokens) << "prompt " << i << " sample " << r.sample_index;
      ++k;
    }
  }
  EXPECT_LE(mixed[2].tokens.size(), 4u);
  prompts[0].n = 0;
  EXPECT_THROW(Generator(m, 2).generate(prompts, p), std::invalid_argument);
}

namespace {

// The filtered next-token distribution, written straight from HF's warper definitions (independent of
// sample_tokens): temperature, then top-k, top-p and min-p, each on the renormalised survivors.
std::vector<double> reference_distribution(const std::vector<double>& logits, const SamplingParams& p) {
  const size_t V = logits.size();
  std::vector<double> probs(V);
  const double mx = *std::max_element(logits.begin(), logits.end());
  for (size_t i = 0; i < V; ++i) probs[i] = std::exp((logits[i] - mx) / p.temperature);
  auto normalise = [&] {
    const double s = std::accumulate(probs.begin(), probs.end(), 0.0);
    for (auto& x : probs) x /= s;
  };
  normalise();
  std::vector<size_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return probs[a] > probs[b]; });
  if (p.top_k > 0) {
    const double kth = probs[order[p.top_k - 1]];
    for (auto& x : probs)
      if (x < kth) x = 0;
    normalise();
  }
  if (p.top_p < 1) {
    double before = 0;
    for (size_t r = 0; r < V; ++r) {
      const double x = probs[order[r]];
      if (before >= p.top_p) probs[order[r]] = 0;
      before += x;
    }
    normalise();
  }
  if (p.min_p > 0) {
    const double top = *std::max_element(probs.begin(), probs.end());
    for (auto& x : probs)
      if (x < p.min_p * top) x = 0;
    normalise();
  }
  return probs;
}

// Pearson's chi-square against the expected counts; bins expected below 5 are pooled.
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& probs, int64_t n, int& df) {
  double stat = 0, pooled_obs = 0, pooled_exp = 0;
  int bins = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const double expected = probs[i] * n;
    if (expected >= 5) {
      stat += (counts[i] - expected) * (counts[i] - expected) / expected;
      ++bins;
    } else {
      pooled_obs += counts[i];
      pooled_exp += expected;
    }
  }
  if (pooled_exp >= 5) {
    stat += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / pooled_exp;
    ++bins;
  }
  df = bins - 1;
  return stat;
}

// Upper 0.1% point of chi-square(df), by the Wilson–Hilferty approximation.
double chi_square_critical(int df) {
  const double z = 3.090, k = df;
  return k * std::pow(1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k)), 3);
}

}  // namespace

TEST_F(RolloutTest, SampledFrequenciesMatchTheFilteredSoftmax) {
  const auto m = sharp_model(tiny("qwen3", 41), 3);
  const Prompt prompt{{5, 17, 2}, 1};
  std::vector<double> logits;
  {
    c10::NoGradGuard g;
    const auto input = at::tensor(std::vector<int64_t>{5, 17, 2}).unsqueeze(0);
    const auto l = m.forward_padded(input, at::ones_like(input)).logits[0][-1].to(at::kDouble);
    logits.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
  }
  struct Variant {
    const char* name;
    double temperature, top_p, min_p;
    int64_t top_k;
  };
  for (const auto& v : {Variant{"temperature 0.8", 0.8, 1.0, 0.0, -1}, Variant{"temperature 2", 2.0, 1.0, 0.0, -1},
                        Variant{"top-k 6", 1.0, 1.0, 0.0, 6}, Variant{"top-p 0.7", 1.0, 0.7, 0.0, -1},
                        Variant{"min-p 0.05", 1.5, 1.0, 0.05, -1}, Variant{"top-k 10 + top-p 0.8", 1.2, 0.8, 0.0, 10}}) {
    SCOPED_TRACE(v.name);
    SamplingParams p;
    p.temperature = v.temperature;
    p.top_p = v.top_p;
    p.min_p = v.min_p;
    p.top_k = v.top_k;
    p.n = 20000;
    p.max_new_tokens = 1;
    p.seed = 7;
    const auto samples = Generator(m, 64).generate({prompt}, p);
    std::vector<int64_t> counts(41, 0);
    for (const auto& s : samples) ++counts[s.tokens[0]];
    const auto expected = reference_distribution(logits, p);
    for (size_t t = 0; t < counts.size(); ++t) {
      if (expected[t] == 0) {
        EXPECT_EQ(counts[t], 0) << "token " << t << " was filtered out but sampled";
      }
    }
    int df = 0;
    const double stat = chi_square(counts, expected, p.n, df);
    ASSERT_GE(df, 1);
    EXPECT_LT(stat, chi_square_critical(df)) << "chi-square " << stat << " with " << df << " degrees of freedom";
  }
}

TEST_F(RolloutTest, PerSequenceLimitsAndStopTokens) {
  const auto m = sharp_model(tiny("llama"));
  auto prompts = some_prompts(97, 3, 5);
  prompts[0].max_new_tokens = 2;
  prompts[1].max_new_tokens = 9;
  SamplingParams p;
  p.greedy = true;
  p.max_new_tokens = 5;
  auto out = Generator(m, 2).generate(prompts, p);
  EXPECT_EQ(out[0].tokens.size(), 2u);
  EXPECT_EQ(out[1].tokens.size(), 9u);
  EXPECT_EQ(out[2].tokens.size(), 5u);
  EXPECT_EQ(out[1].finish, rollout::FinishReason::kLength);
  // Stop at the token greedy decoding produces third.
  const int32_t third = out[1].tokens[2];
  p.stop_token_ids = {third};
  out = Generator(m, 2).generate({prompts[1]}, p);
  EXPECT_EQ(out[0].finish, rollout::FinishReason::kStop);
  EXPECT_EQ(out[0].tokens.back(), third);
  EXPECT_LE(out[0].tokens.size(), 3u);
}

TEST_F(RolloutTest, StopStringsAndEos) {
  const auto model = CausalLM::load(kStories);
  const auto tok = tokenizer::Tokenizer::load(kStories);
  SamplingParams p;
  p.greedy = true;
  p.max_new_tokens = 200;
  p.stop = {"little girl"};
  const auto out = Generator(model, 2, 0, tok.get()).generate({Prompt{{1}, -1}}, p);
  EXPECT_EQ(out[0].finish, rollout::FinishReason::kStop);
  const std::string text = tok->decode(out[0].tokens);
  EXPECT_THAT(text, ::testing::EndsWith("little girl"));
}

TEST_F(RolloutTest, ModelEosFinishesEos) {
  // Same weights (same seed and shapes); the second model's EOS is the token greedy decoding emits first.
  auto arch = tiny("llama");
  SamplingParams p;
  p.greedy = true;
  p.max_new_tokens = 8;
  const Prompt prompt{{3, 4, 5}, -1};
  const int32_t first = Generator(sharp_model(arch), 1).generate({prompt}, p)[0].tokens[0];
  arch.eos_token_ids = {first};
  const auto out = Generator(sharp_model(arch), 1).generate({prompt}, p);
  EXPECT_EQ(out[0].tokens, std::vector<int32_t>{first}) << "EOS is kept as the last token, as HF generate does";
  EXPECT_EQ(out[0].finish, rollout::FinishReason::kEos);
}

TEST_F(RolloutTest, KvBudgetAndBadPromptsAreClearErrors) {
  const auto m = sharp_model(tiny("qwen3"));
  SamplingParams p;
  p.max_new_tokens = 1000;
  try {
    Generator(m, 64, /*kv_budget_bytes=*/1 << 20).generate(some_prompts(97, 64, 1), p);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("the KV cache needs 15 MiB (64 slots x 1006 tokens x 2 layers) but the budget is 1 MiB"));
  }
  EXPECT_THROW(Generator(m, 4).generate({Prompt{{}, -1}}, p), std::invalid_argument);
  try {
    Generator(m, 4).generate({Prompt{{1, 500}, -1}}, p);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("prompt 0 has token id 500 outside the model's vocabulary of 97"));
  }
}
