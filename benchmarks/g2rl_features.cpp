// G2RL's feature cost (issue G): the old-log-prob pass with and without the factorised features
// Φ = E_outᵀ(c − p̄), on the CPU benchmark model of benchmarks/grpo_step.py (Qwen3 architecture, 4 layers x 128,
// the 151,936-token tied head), 64 responses of 64 tokens after 128-token prompts.
//   bench_g2rl_features [threads] [pairs]
// Two measurements, each as `pairs` back-to-back (plain, features) pairs so that slow drifts of a shared machine
// hit both sides alike; the overhead is the median of the per-pair ratios:
//   - "pass": the whole old-log-prob pass, the model forward plus the chunked head, in micro-batches of 16
//     sequences (what the trainer times);
//   - "head": the chunked head alone, on the same hidden states.
// The naive per-token form mean_t(E_out[y_t] − E_outᵀ p_t) is timed on the head, and checked against Φ.
// Prints one JSON line per figure.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "introspect/core/runtime.h"
#include "introspect/model/decoder.h"

namespace {

namespace m = introspect::model;

double seconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct PairedTiming {
  double plain, features, overhead;  // medians; overhead = median of features/plain - 1 over the pairs
};

PairedTiming paired(int pairs, const std::function<void()>& plain, const std::function<void()>& features) {
  plain();  // warm-up
  features();
  std::vector<double> a, b, ratio;
  for (int i = 0; i < pairs; ++i) {
    a.push_back(seconds(plain));
    b.push_back(seconds(features));
    ratio.push_back(b.back() / a.back());
  }
  return {median(a), median(b), median(ratio) - 1.0};
}

void print(const char* name, const PairedTiming& t, int pairs) {
  std::printf("{\"measure\": \"%s\", \"plain_s\": %.4f, \"with_features_s\": %.4f, \"overhead\": %.4f, \"pairs\": %d}\n",
              name, t.plain, t.features, t.overhead, pairs);
}

}  // namespace

int main(int argc, char** argv) {
  introspect::core::init_torch(argc > 1 ? std::stoll(argv[1]) : 0);
  const int pairs = argc > 2 ? std::stoi(argv[2]) : 7;
  const int64_t micro = 16;
  const int64_t sequences = 64, prompt = 128, length = 64, N = sequences * length;
  // The model of benchmarks/grpo_step.py, in its config.json form.
  const auto arch = m::parse_hf_config_text(
      R"({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 128, "intermediate_size": 384,
          "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
          "max_position_embeddings": 1024, "tie_word_embeddings": true, "eos_token_id": 151645})",
      "bench_g2rl_features");
  const auto model = m::CausalLM::random(arch, 0);
  const int64_t V = arch.vocab_size;
  c10::NoGradGuard no_grad;
  torch::manual_seed(0);
  const auto ids = torch::randint(0, V, {sequences, prompt + length}, torch::kLong);
  const auto attention = torch::ones_like(ids);
  const auto targets = ids.narrow(1, prompt, length).reshape({N});
  const auto segments = torch::arange(N, torch::kLong).div(length, "floor");
  // The hidden state at position t predicts token t + 1: the rows before each response token.
  auto response_hidden = [&](int64_t first, int64_t count) {
    const auto hidden = model.forward_padded(ids.narrow(0, first, count), attention.narrow(0, first, count),
                                             /*want_logits=*/false).hidden;
    return hidden.narrow(1, prompt - 1, length).reshape({count * length, arch.hidden_size}).contiguous();
  };
  const auto hidden = response_hidden(0, sequences);
  const auto weight = model.lm_head_weight();

  // The whole pass as the trainer runs it: micro-batches of `micro` sequences (16 in benchmarks/grpo_step.py).
  auto pass_over_micro_batches = [&](bool features) {
    for (int64_t first = 0; first < sequences; first += micro) {
      const auto h = response_hidden(first, micro);
      const auto t = targets.narrow(0, first * length, micro * length);
      if (features) {
        m::chunked_logprobs_and_features(h, weight, t, segments.narrow(0, 0, micro * length), micro);
      } else {
        m::chunked_token_logprobs_entropy(h, weight, t);
      }
    }
  };
  at::Tensor fact_out;
  const auto pass = paired(pairs, [&] { pass_over_micro_batches(false); }, [&] { pass_over_micro_batches(true); });
  const auto head = paired(
      pairs, [&] { m::chunked_token_logprobs_entropy(hidden, weight, targets); },
      [&] { fact_out = m::chunked_logprobs_and_features(hidden, weight, targets, segments, sequences).features; });
  // The naive form: per token φ_t = E_out[y_t] − p_t E_out (a second [rows x V] x [V x H] GEMM per chunk).
  at::Tensor naive_out;
  std::vector<double> naive_times;
  for (int i = 0; i < std::max(1, pairs / 2); ++i) {
    naive_times.push_back(seconds([&] {
      auto features = torch::zeros({sequences, arch.hidden_size});
      const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / V);
      for (int64_t s = 0; s < N; s += chunk) {
        const int64_t len = std::min(chunk, N - s);
        const auto logits = torch::matmul(hidden.narrow(0, s, len), weight.t());
        const auto p = torch::softmax(logits, -1);
        const auto phi = weight.index_select(0, targets.narrow(0, s, len)) - torch::matmul(p, weight);
        features.index_add_(0, segments.narrow(0, s, len), phi);
      }
      naive_out = features / static_cast<double>(length);
    }));
  }
  const double naive = median(naive_times);
  const double diff = (fact_out - naive_out).abs().max().item<double>();
  print("old-logprob pass (forward + head)", pass, pairs);
  print("head alone", head, pairs);
  // The factorised extra can measure at or below zero on a noisy machine; the ratio then means nothing.
  const double factorised_extra = head.features - head.plain;
  std::printf("{\"measure\": \"naive per-token features on the head\", \"extra_s\": %.4f, \"overhead\": %.4f, "
              "\"naive_over_factorised_extra\": %s}\n",
              naive, naive / head.plain,
              factorised_extra > 0 ? std::to_string(naive / factorised_extra).c_str() : "null");
  std::printf("{\"max_abs_diff_factorised_vs_naive\": %.3g}\n", diff);
  return diff < 1e-4 ? 0 : 1;
}
