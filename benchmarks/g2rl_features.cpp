// G2RL's feature cost (issue G): the old-log-prob pass with and without the factorised features
// Φ = E_outᵀ(c − p̄), on the CPU benchmark model of benchmarks/grpo_step.py (Qwen3 architecture, 4 layers x 128,
// the 151,936-token tied head), 64 responses of 64 tokens after 128-token prompts.
//   bench_g2rl_features [threads] [rounds]
// Three measurements, each over `rounds` x 4 micro-batches of 16 sequences (the trainer's calls), every micro-batch
// timed plain and with features back to back; the overhead is the median of the per-pair ratios (with quartiles and
// a 95% confidence interval for the median):
//   - "pass": the whole old-log-prob pass, the model forward plus the chunked head;
//   - "head": the chunked head alone, on the same hidden states;
//   - the head with features against a head that computes log-probs only (no entropy, so no probabilities).
// The naive per-token form mean_t(E_out[y_t] − E_outᵀ p_t) is timed on the head, and checked against Φ.
// Prints one JSON line per figure.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
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
  // Medians over the pairs: seconds per micro-batch; overhead = median of features/plain - 1, with its quartiles
  // and a 95% confidence interval.
  double plain, features, overhead, overhead_q1, overhead_q3, overhead_ci_low, overhead_ci_high;
  int pairs;
};

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// A distribution-free 95% interval for the median of n pairs: the order statistics n/2 -+ 0.98 sqrt(n), rounded
// (the binomial(n, 1/2) count of pairs below the median, in its normal approximation). It assumes the pairs are
// independent, which the back-to-back pairing makes closer to true on a drifting machine. NaN below 6 pairs, where
// even the extremes cover less than 95%.
std::pair<double, double> median_interval(std::vector<double> v) {
  if (v.size() < 6) return {NAN, NAN};
  std::sort(v.begin(), v.end());
  const double n = static_cast<double>(v.size()), half_width = 0.98 * std::sqrt(n);
  const auto at_rank = [&](double r) { return v[static_cast<size_t>(std::clamp(std::round(r), 1.0, n)) - 1]; };
  return {at_rank(n / 2 - half_width), at_rank(n / 2 + 1 + half_width)};
}

// Each pair is one micro-batch timed both ways back to back, the side that goes first alternating, so that a drift
// of a shared machine (minutes long here) hits both sides of a pair alike and favours neither.
PairedTiming paired(int rounds, int64_t micro_batches, const std::function<void(int64_t)>& plain,
                    const std::function<void(int64_t)>& features) {
  plain(0);  // warm-up
  features(0);
  std::vector<double> a, b, ratio;
  for (int r = 0; r < rounds; ++r) {
    for (int64_t mb = 0; mb < micro_batches; ++mb) {
      if (ratio.size() % 2 == 0) {
        a.push_back(seconds([&] { plain(mb); }));
        b.push_back(seconds([&] { features(mb); }));
      } else {
        b.push_back(seconds([&] { features(mb); }));
        a.push_back(seconds([&] { plain(mb); }));
      }
      ratio.push_back(b.back() / a.back());
    }
  }
  const auto [low, high] = median_interval(ratio);
  return {median(a),       median(b),  quantile(ratio, 0.5) - 1.0,      quantile(ratio, 0.25) - 1.0,
          quantile(ratio, 0.75) - 1.0, low - 1.0, high - 1.0, static_cast<int>(ratio.size())};
}

void print(const char* name, const PairedTiming& t) {
  const auto interval = std::isfinite(t.overhead_ci_low)
                            ? "[" + std::to_string(t.overhead_ci_low) + ", " + std::to_string(t.overhead_ci_high) + "]"
                            : std::string("null");  // too few pairs
  std::printf("{\"measure\": \"%s\", \"plain_s_per_micro_batch\": %.4f, \"with_features_s\": %.4f, "
              "\"overhead\": %.4f, \"overhead_quartiles\": [%.4f, %.4f], \"overhead_median_95ci\": %s, "
              "\"pairs\": %d}\n",
              name, t.plain, t.features, t.overhead, t.overhead_q1, t.overhead_q3, interval.c_str(), t.pairs);
}

}  // namespace

int main(int argc, char** argv) {
  introspect::core::init_torch(argc > 1 ? std::stoll(argv[1]) : 0);
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 5;
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

  // Micro-batches of `micro` sequences, as the trainer runs the pass (16 in benchmarks/grpo_step.py).
  const int64_t micro_batches = sequences / micro, rows = micro * length;
  const auto micro_segments = segments.narrow(0, 0, rows);
  auto head = [&](const at::Tensor& h, int64_t mb, bool features) {
    const auto t = targets.narrow(0, mb * rows, rows);
    if (features) {
      m::chunked_logprobs_and_features(h, weight, t, micro_segments, micro);
    } else {
      m::chunked_token_logprobs_entropy(h, weight, t);
    }
  };
  const auto pass = paired(
      rounds, micro_batches, [&](int64_t mb) { head(response_hidden(mb * micro, micro), mb, false); },
      [&](int64_t mb) { head(response_hidden(mb * micro, micro), mb, true); });
  const auto head_alone = paired(
      rounds, micro_batches, [&](int64_t mb) { head(hidden.narrow(0, mb * rows, rows), mb, false); },
      [&](int64_t mb) { head(hidden.narrow(0, mb * rows, rows), mb, true); });
  // A pass that keeps only the log-probs (as when nothing reads the entropy) needs no probabilities: the GEMM,
  // logsumexp and a gather per chunk. Φ needs the probabilities, so against this pass it costs their computation too.
  const auto head_logp_only = paired(
      rounds, micro_batches,
      [&](int64_t mb) {
        const auto h = hidden.narrow(0, mb * rows, rows);
        const auto t = targets.narrow(0, mb * rows, rows);
        const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / V);
        for (int64_t s = 0; s < rows; s += chunk) {
          const int64_t len = std::min(chunk, rows - s);
          const auto logits = torch::matmul(h.narrow(0, s, len), weight.t());
          logits.gather(1, t.narrow(0, s, len).unsqueeze(1)).squeeze(1).sub_(torch::logsumexp(logits, -1));
        }
      },
      [&](int64_t mb) { head(hidden.narrow(0, mb * rows, rows), mb, true); });
  const auto fact_out = m::chunked_logprobs_and_features(hidden, weight, targets, segments, sequences).features;
  // The naive form: per token φ_t = E_out[y_t] − p_t E_out (a second [rows x V] x [V x H] GEMM per chunk).
  at::Tensor naive_out;
  std::vector<double> naive_times;
  for (int i = 0; i < std::max(1, rounds / 2); ++i) {
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
  const double naive = median(naive_times) / static_cast<double>(micro_batches);  // per micro-batch
  const double diff = (fact_out - naive_out).abs().max().item<double>();
  print("old-logprob pass (forward + head)", pass);
  print("head alone", head_alone);
  print("head alone, against a log-prob-only head", head_logp_only);
  // The factorised extra can measure at or below zero on a noisy machine; the ratio then means nothing.
  const double factorised_extra = head_alone.features - head_alone.plain;
  std::printf("{\"measure\": \"naive per-token features on the head\", \"extra_s_per_micro_batch\": %.4f, "
              "\"overhead\": %.4f, \"naive_over_factorised_extra\": %s}\n",
              naive, naive / head_alone.plain,
              factorised_extra > 0 ? std::to_string(naive / factorised_extra).c_str() : "null");
  std::printf("{\"max_abs_diff_factorised_vs_naive\": %.3g}\n", diff);
  return diff < 1e-4 ? 0 : 1;
}
