// The decoder: stories260K's golden greedy output, KV-cache and batching equivalences, chunked log-probs,
// activation checkpointing, and HF-folder save/load with its error cases.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <c10/core/GradMode.h>

#include <nlohmann/json.hpp>

#include "introspect/core/runtime.h"
#include "introspect/io/safetensors.h"
#include "introspect/model/decoder.h"
#include "test_util.h"

using namespace introspect::model;
using introspect::testing::read_file;
using introspect::testing::ScratchDir;
using ::testing::HasSubstr;

namespace {

const std::string kStories = std::string(INTROSPECT_SHARED_DIR) + "/data/models/stories260K";

ModelArch tiny(const std::string& type, bool tied = false) {
  ModelArch a;
  a.model_type = type;
  a.vocab_size = 97;
  a.hidden_size = 32;
  a.intermediate_size = 48;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.head_dim = type == "qwen3" ? 16 : 8;  // qwen3's head_dim may differ from hidden/heads
  a.rms_norm_eps = 1e-6;
  a.rope_theta = 10000;
  a.tie_word_embeddings = tied;
  if (type == "qwen2") a.attention_bias = true;
  if (type == "qwen3") a.qk_norm = true;
  if (type == "llama") {
    a.rope_scaling.type = "llama3";
    a.rope_scaling.factor = 8;
    a.rope_scaling.low_freq_factor = 1;
    a.rope_scaling.high_freq_factor = 4;
    a.rope_scaling.original_max_position_embeddings = 16;
  }
  return a;
}

CausalLM random_model(const ModelArch& a, uint64_t seed = 7) {
  auto m = CausalLM::random(a, seed);
  // Non-trivial biases and norms, so those code paths are exercised.
  c10::NoGradGuard g;
  for (auto& [name, p] : m.named_parameters())
    if (p.dim() == 1) p.uniform_(0.5, 1.5);
  return m;
}

at::Tensor ids(std::initializer_list<int64_t> v) { return at::tensor(std::vector<int64_t>(v), at::kLong).unsqueeze(0); }

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Greedy decoding through the KV cache, one sequence.
std::vector<int64_t> greedy_cached(const CausalLM& m, int64_t bos, int64_t n) {
  c10::NoGradGuard g;
  KVCache cache(m.arch(), 1, n + 1, at::kFloat);
  std::vector<int64_t> out;
  int64_t token = bos;
  const auto slot = at::zeros({1}, at::kLong);
  for (int64_t pos = 0; pos < n; ++pos) {
    const auto logits = m.forward_cached(ids({token}), at::full({1, 1}, pos, at::kLong), slot, cache).logits;
    token = logits[0][0].argmax().item<int64_t>();
    out.push_back(token);
  }
  return out;
}

// Greedy decoding by recomputing the whole prefix each step.
std::vector<int64_t> greedy_recompute(const CausalLM& m, int64_t bos, int64_t n) {
  c10::NoGradGuard g;
  std::vector<int64_t> seq{bos};
  for (int64_t i = 0; i < n; ++i) {
    const auto input = at::tensor(seq, at::kLong).unsqueeze(0);
    const auto logits = m.forward_padded(input, at::ones_like(input)).logits;
    seq.push_back(logits[0][-1].argmax().item<int64_t>());
  }
  return {seq.begin() + 1, seq.end()};
}

}  // namespace

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override { introspect::core::init_torch(2); }
};

TEST_F(ModelTest, Stories260KGreedyMatchesUpstreamGolden) {
  const auto golden = nlohmann::json::parse(read_file(kStories + "/greedy200.json"));
  const auto expected = golden["greedy_ids"].get<std::vector<int64_t>>();
  ASSERT_EQ(expected.size(), 200u);
  const auto model = CausalLM::load(kStories);
  EXPECT_EQ(model.arch().num_kv_heads, 4);
  EXPECT_TRUE(model.arch().tie_word_embeddings);
  EXPECT_EQ(greedy_cached(model, 1, 200), expected);
  EXPECT_EQ(greedy_recompute(model, 1, 200), expected);
}

TEST_F(ModelTest, KvCacheMatchesFullForward) {
  for (const char* type : {"llama", "qwen2", "qwen3"}) {
    SCOPED_TRACE(type);
    const auto m = random_model(tiny(type));
    c10::NoGradGuard g;
    const auto seq = at::randint(0, 97, {1, 12}, at::kLong);
    const auto full = m.forward_padded(seq, at::ones_like(seq)).logits;
    KVCache cache(m.arch(), 3, 16, at::kFloat);
    const auto slot = at::full({1}, 2, at::kLong);  // not slot 0: slots are independent rows
    // Prefill 5 tokens, then one at a time.
    auto out = m.forward_cached(seq.narrow(1, 0, 5), at::arange(5, at::kLong).unsqueeze(0), slot, cache).logits;
    EXPECT_LT(max_abs(out, full.narrow(1, 0, 5)), 1e-5);
    for (int64_t p = 5; p < 12; ++p) {
      out = m.forward_cached(seq.narrow(1, p, 1), at::full({1, 1}, p, at::kLong), slot, cache).logits;
      EXPECT_LT(max_abs(out[0][0], full[0][p]), 1e-5) << "position " << p;
    }
  }
}

TEST_F(ModelTest, KvCacheBatchedSlotsAtDifferentLengths) {
  const auto m = random_model(tiny("qwen3"));
  c10::NoGradGuard g;
  const auto a = at::randint(0, 97, {1, 9}, at::kLong);
  const auto b = at::randint(0, 97, {1, 4}, at::kLong);
  KVCache cache(m.arch(), 2, 16, at::kFloat);
  m.forward_cached(a.narrow(1, 0, 8), at::arange(8, at::kLong).unsqueeze(0), at::tensor({0}, at::kLong), cache);
  m.forward_cached(b.narrow(1, 0, 3), at::arange(3, at::kLong).unsqueeze(0), at::tensor({1}, at::kLong), cache);
  // One decode step for both slots at once, at positions 8 and 3.
  const auto step_ids = at::cat({a.narrow(1, 8, 1), b.narrow(1, 3, 1)}, 0);
  const auto step_pos = at::tensor({8, 3}, at::kLong).view({2, 1});
  const auto out = m.forward_cached(step_ids, step_pos, at::tensor({0, 1}, at::kLong), cache).logits;
  EXPECT_LT(max_abs(out[0][0], m.forward_padded(a, at::ones_like(a)).logits[0][8]), 1e-5);
  EXPECT_LT(max_abs(out[1][0], m.forward_padded(b, at::ones_like(b)).logits[0][3]), 1e-5);
}

TEST_F(ModelTest, LeftPaddedBatchMatchesUnpaddedRows) {
  const auto m = random_model(tiny("llama"));
  c10::NoGradGuard g;
  const auto long_row = at::randint(0, 97, {1, 7}, at::kLong);
  const auto short_row = at::randint(0, 97, {1, 4}, at::kLong);
  auto batch = at::zeros({2, 7}, at::kLong);
  auto mask = at::zeros({2, 7}, at::kLong);
  batch[0] = long_row[0];
  mask[0].fill_(1);
  batch[1].narrow(0, 3, 4).copy_(short_row[0]);
  mask[1].narrow(0, 3, 4).fill_(1);
  const auto out = m.forward_padded(batch, mask).logits;
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  EXPECT_LT(max_abs(out[0], m.forward_padded(long_row, at::ones_like(long_row)).logits[0]), 1e-5);
  EXPECT_LT(max_abs(out[1].narrow(0, 3, 4), m.forward_padded(short_row, at::ones_like(short_row)).logits[0]), 1e-5);
}

TEST_F(ModelTest, PackedSequencesMatchSeparateForwards) {
  const auto m = random_model(tiny("qwen2"));
  c10::NoGradGuard g;
  const auto a = at::randint(0, 97, {1, 5}, at::kLong);
  const auto b = at::randint(0, 97, {1, 3}, at::kLong);
  const auto packed = at::cat({a, b}, 1);
  const auto positions = at::tensor({0, 1, 2, 3, 4, 0, 1, 2}, at::kLong).unsqueeze(0);
  const auto segments = at::tensor({0, 0, 0, 0, 0, 1, 1, 1}, at::kLong).unsqueeze(0);
  const auto out = m.forward(packed, positions, segments).logits;
  EXPECT_LT(max_abs(out[0].narrow(0, 0, 5), m.forward_padded(a, at::ones_like(a)).logits[0]), 1e-5);
  EXPECT_LT(max_abs(out[0].narrow(0, 5, 3), m.forward_padded(b, at::ones_like(b)).logits[0]), 1e-5);
}

TEST_F(ModelTest, HiddenStatesFeedTheHead) {
  const auto m = random_model(tiny("qwen3", /*tied=*/true));
  c10::NoGradGuard g;
  const auto seq = at::randint(0, 97, {2, 6}, at::kLong);
  const auto out = m.forward_padded(seq, at::ones_like(seq));
  EXPECT_EQ(out.hidden.sizes(), (std::vector<int64_t>{2, 6, 32}));
  EXPECT_LT(max_abs(at::matmul(out.hidden, m.lm_head_weight().t()), out.logits), 1e-6);
  EXPECT_FALSE(m.forward_padded(seq, at::ones_like(seq), /*want_logits=*/false).logits.defined());
}

TEST_F(ModelTest, ChunkedLogprobsMatchFullSoftmaxValuesAndGradients) {
  at::manual_seed(3);
  for (double temperature : {1.0, 0.7}) {
    for (int64_t chunk : {1, 5, 1024}) {
      SCOPED_TRACE("T=" + std::to_string(temperature) + " chunk=" + std::to_string(chunk));
      const auto h0 = at::randn({13, 16}, at::kDouble).to(at::kFloat);
      const auto w0 = at::randn({41, 16}).to(at::kFloat);
      const auto targets = at::randint(0, 41, {13}, at::kLong);
      const auto coeff = at::randn({13});
      auto h1 = h0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
      const auto ours = chunked_token_logprobs(h1, w1, targets, temperature, chunk);
      (ours * coeff).sum().backward();
      auto h2 = h0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
      const auto ref = at::log_softmax(at::matmul(h2, w2.t()) / temperature, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
      (ref * coeff).sum().backward();
      EXPECT_LT(max_abs(ours, ref), 1e-5);
      EXPECT_LT(max_abs(h1.grad(), h2.grad()), 1e-5);
      EXPECT_LT(max_abs(w1.grad(), w2.grad()), 1e-5);
    }
  }
}

TEST_F(ModelTest, ChunkedEntropyMatchesFullSoftmaxValuesAndGradients) {
  at::manual_seed(4);
  for (double temperature : {1.0, 0.6}) {
    const auto h0 = at::randn({11, 16}), w0 = at::randn({37, 16});
    const auto targets = at::randint(0, 37, {11}, at::kLong);
    const auto c1 = at::randn({11}), c2 = at::randn({11});
    auto h1 = h0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
    const auto [lp, ent] = chunked_token_logprobs_entropy(h1, w1, targets, temperature, 4);
    ((lp * c1).sum() + (ent * c2).sum()).backward();
    auto h2 = h0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
    const auto logp = at::log_softmax(at::matmul(h2, w2.t()) / temperature, -1);
    const auto ref_lp = logp.gather(1, targets.unsqueeze(1)).squeeze(1);
    const auto ref_ent = -(logp.exp() * logp).sum(-1);
    ((ref_lp * c1).sum() + (ref_ent * c2).sum()).backward();
    EXPECT_LT(max_abs(ent, ref_ent), 5e-5);  // fp32: lse - E[z] cancels on entropies near log V
    EXPECT_LT(max_abs(h1.grad(), h2.grad()), 1e-4);
    EXPECT_LT(max_abs(w1.grad(), w2.grad()), 1e-4);
  }
}

TEST_F(ModelTest, ActivationCheckpointingGivesTheSameGradients) {
  auto m = random_model(tiny("qwen3"));
  const auto seq = at::randint(0, 97, {2, 8}, at::kLong);
  auto grads = [&](bool checkpoint) {
    m.set_activation_checkpointing(checkpoint);
    for (auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
    const auto out = m.forward_padded(seq, at::ones_like(seq), false);
    const auto lp = chunked_token_logprobs(out.hidden.reshape({-1, 32}), m.lm_head_weight(), seq.reshape(-1));
    lp.sum().backward();
    std::vector<at::Tensor> g;
    for (auto& p : m.parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto plain = grads(false);
  const auto recomputed = grads(true);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_LT(max_abs(plain[i], recomputed[i]), 1e-5) << "param " << i;
}

TEST_F(ModelTest, SaveAndLoadRoundTripShardedAndBf16) {
  ScratchDir dir;
  const auto m = random_model(tiny("llama"));
  m.save(dir.path() / "one");
  m.save(dir.path() / "sharded", /*max_shard_bytes=*/20'000, kStories);
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "sharded" / "model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "sharded" / "tokenizer.model")) << "tokenizer files are copied";
  c10::NoGradGuard g;
  const auto seq = at::randint(0, 97, {1, 6}, at::kLong);
  const auto want = m.forward_padded(seq, at::ones_like(seq)).logits;
  for (const char* sub : {"one", "sharded"}) {
    const auto back = CausalLM::load(dir.path() / sub);
    EXPECT_EQ(max_abs(back.forward_padded(seq, at::ones_like(seq)).logits, want), 0.0) << sub;
  }
  const auto bf16 = CausalLM::load(dir.path() / "one", at::kBFloat16);
  EXPECT_EQ(bf16.dtype(), at::kBFloat16);
  EXPECT_EQ(bf16.lm_head_weight().scalar_type(), at::kBFloat16);
  EXPECT_LT(max_abs(bf16.forward_padded(seq, at::ones_like(seq)).logits.to(at::kFloat), want), 0.1);
}

namespace {
std::string load_error(const std::filesystem::path& dir) {
  try {
    CausalLM::load(dir);
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error loading " << dir;
  return "";
}

void edit_config(const std::filesystem::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(read_file(dir / "config.json"));
  edit(j);
  std::ofstream(dir / "config.json") << j.dump();
}
}  // namespace

TEST_F(ModelTest, BadCheckpointsNameTheFileAndTensor) {
  ScratchDir dir;
  const auto m = random_model(tiny("qwen3"));
  const auto ckpt = dir.path() / "ckpt";
  m.save(ckpt);

  edit_config(ckpt, [](auto& j) { j["num_hidden_layers"] = 3; });
  EXPECT_THAT(load_error(ckpt), HasSubstr("missing tensor 'model.layers.2."));

  edit_config(ckpt, [](auto& j) { j["num_hidden_layers"] = 2; j["intermediate_size"] = 50; });
  EXPECT_THAT(load_error(ckpt), HasSubstr("model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape "
                                          "[48, 32] but config.json implies [50, 32]"));

  edit_config(ckpt, [](auto& j) { j["intermediate_size"] = 48; j["model_type"] = "gpt2"; });
  EXPECT_THAT(load_error(ckpt), HasSubstr("config.json: model_type: unsupported model_type 'gpt2'"));

  edit_config(ckpt, [](auto& j) { j["model_type"] = "qwen3"; j.erase("hidden_size"); });
  EXPECT_THAT(load_error(ckpt), HasSubstr("config.json: hidden_size: missing required key"));

  // A weight stored as I64.
  const auto ints = dir.path() / "ints";
  std::filesystem::create_directories(ints);
  std::filesystem::copy_file(kStories + "/config.json", ints / "config.json");
  std::vector<int64_t> data(512 * 64, 0);
  introspect::io::write_safetensors(ints / "model.safetensors",
                                    {{"model.embed_tokens.weight", introspect::io::DType::kI64, {512, 64}, data.data(),
                                      data.size() * 8}});
  EXPECT_THAT(load_error(ints), HasSubstr("tensor 'model.embed_tokens.weight': dtype I64 is not supported"));

  // A truncated shard.
  const auto cut = dir.path() / "cut";
  std::filesystem::create_directories(cut);
  std::filesystem::copy_file(kStories + "/config.json", cut / "config.json");
  const std::string bytes = read_file(kStories + "/model.safetensors");
  std::ofstream(cut / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_THAT(load_error(cut), HasSubstr("model.safetensors: tensor '"));
}

TEST_F(ModelTest, PackedInferenceWeightsNeverGoStale) {
  auto m = random_model(tiny("qwen3"));
  const auto seq = at::randint(0, 97, {2, 5}, at::kLong);
  c10::NoGradGuard g;
  const auto before = m.forward_padded(seq, at::ones_like(seq)).logits;
  m.pack_for_inference(2);
  EXPECT_LT(max_abs(m.forward_padded(seq, at::ones_like(seq)).logits, before), 1e-4) << "packed path, same weights";
  // An in-place update (what an optimizer step does) must be seen at once, packed copy or not.
  for (auto& [name, p] : m.named_parameters())
    if (p.dim() == 2) p.mul_(1.5);
  const auto after = m.forward_padded(seq, at::ones_like(seq)).logits;
  ScratchDir dir;
  m.save(dir.path());
  const auto fresh = CausalLM::load(dir.path());  // never packed
  EXPECT_LT(max_abs(after, fresh.forward_padded(seq, at::ones_like(seq)).logits), 1e-5);
  EXPECT_GT(max_abs(after, before), 1e-2);
}

// G²RL's exact identity (spec §2.1/§2.3): per token, φ_t = T·∂log p(y_t)/∂h_t by autograd; their mean over a
// sequence's tokens equals the factorised Φ = E_outᵀ(c − p̄) from the chunked pass.
TEST_F(ModelTest, G2rlFeaturesEqualTheMeanHiddenStateGradient) {
  at::manual_seed(5);
  const double temperature = 0.8;
  const auto hidden = at::randn({9, 16});
  const auto weight = at::randn({29, 16}) * 0.5;
  const auto targets = at::randint(0, 29, {9}, at::kLong);
  const auto segments = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 1, 1, 2, 2, 2});
  const auto ours = chunked_logprobs_and_features(hidden, weight, targets, segments, 3, temperature, 4);
  auto h = hidden.clone().requires_grad_(true);
  const auto lp = at::log_softmax(at::matmul(h, weight.t()) / temperature, -1).gather(1, targets.unsqueeze(1));
  lp.sum().backward();  // row t's gradient only flows from token t
  const auto phi = h.grad() * temperature;
  for (int64_t s = 0; s < 3; ++s) {
    const auto rows = (segments == s).nonzero().squeeze(1);
    const auto expected = phi.index_select(0, rows).mean(0);
    const double rel = (ours.features[s] - expected).abs().max().item<double>() / expected.abs().max().item<double>();
    EXPECT_LT(rel, 1e-5) << "sequence " << s;
  }
  EXPECT_LT(max_abs(ours.logp, lp.detach().squeeze(1)), 1e-5);
}

// The same pass over a vocabulary of several column tiles, with one sequence's rows interleaved with another's,
// against the full softmax in fp64: entropy, log-probs and Φ; and segment ids out of range are refused.
// Against a float64 full softmax: column tiles with a partial last tile, vocabulary blocks of the p̄ GEMM (two full
// and a tail), rows of one sequence in runs of 1 to 4 and split by chunk ends, and interleaved sequences.
TEST_F(ModelTest, G2rlFeaturesOverManyColumnTilesAndInterleavedSequences) {
  at::manual_seed(6);
  const double temperature = 0.7;
  auto check = [&](int64_t V, const std::vector<int64_t>& segment_ids, int64_t num_segments, int64_t chunk) {
    const int64_t H = 8, n = static_cast<int64_t>(segment_ids.size());
    const auto hidden = at::randn({n, H});
    const auto weight = at::randn({V, H});
    const auto targets = at::randint(0, V, {n}, at::kLong);
    const auto segments = at::tensor(segment_ids);
    const auto ours = chunked_logprobs_and_features(hidden, weight, targets, segments, num_segments, temperature, chunk);
    const auto w = weight.to(at::kDouble);
    const auto logp = at::log_softmax(at::matmul(hidden.to(at::kDouble), w.t()) / temperature, -1);
    const auto p = logp.exp();
    EXPECT_LT(max_abs(ours.entropy, -(p * logp).sum(-1).to(at::kFloat)), 1e-4) << "V " << V << " chunk " << chunk;
    EXPECT_LT(max_abs(ours.logp, logp.gather(1, targets.unsqueeze(1)).squeeze(1).to(at::kFloat)), 1e-4);
    const auto onehot = at::one_hot(targets, V).to(at::kDouble);
    for (int64_t s = 0; s < num_segments; ++s) {
      const auto rows = (segments == s).nonzero().squeeze(1);
      const auto expected = at::matmul((onehot.index_select(0, rows) - p.index_select(0, rows)).mean(0), w);
      const double rel = (ours.features[s].to(at::kDouble) - expected).abs().max().item<double>() /
                         expected.abs().max().item<double>();
      EXPECT_LT(rel, 1e-5) << "V " << V << " chunk " << chunk << " sequence " << s;
    }
    return std::make_tuple(hidden, weight, targets, segments);
  };
  for (int64_t chunk : {17, 5}) check(2 * 8192 + 7, {0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 1, 3, 3, 3, 3}, 4, chunk);
  const auto [hidden, weight, targets, segments] = check(9001, {1, 0, 1, 2, 0, 1, 2}, 3, 3);
  EXPECT_THROW(chunked_logprobs_and_features(hidden, weight, targets, segments, 2, temperature), c10::Error);
  EXPECT_THROW(chunked_logprobs_and_features(hidden, weight, targets, segments - 1, 3, temperature), c10::Error);
}
