// G2RL's feature cost (issue G): the old-log-prob pass with and without the factorised features
// Φ = E_outᵀ(c − p̄), and the naive per-token form mean_t(E_out[y_t] − E_outᵀ p_t), side by side on the CPU
// benchmark model's head (151,936 x 128, as benchmarks/grpo_step.py) over 64 responses of 64 tokens.
//   bench_g2rl_features [threads] [repeats]
// Prints one JSON line per variant (median seconds) and the overheads against the plain pass.
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

double median_seconds(int repeats, const std::function<void()>& fn) {
  std::vector<double> t;
  fn();  // warm-up
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  introspect::core::init_torch(argc > 1 ? std::stoll(argv[1]) : 0);
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 5;
  const int64_t V = 151936, H = 128, sequences = 64, length = 64, N = sequences * length;
  c10::NoGradGuard no_grad;
  torch::manual_seed(0);
  const auto weight = torch::randn({V, H}) * 0.02;
  const auto hidden = torch::randn({N, H});
  const auto targets = torch::randint(0, V, {N}, torch::kLong);
  const auto segments = torch::arange(N, torch::kLong).div(length, "floor");
  namespace m = introspect::model;

  at::Tensor plain_out, fact_out, naive_out;
  const double plain = median_seconds(repeats, [&] {
    plain_out = m::chunked_token_logprobs_entropy(hidden, weight, targets).first;
  });
  const double factorised = median_seconds(repeats, [&] {
    fact_out = m::chunked_logprobs_and_features(hidden, weight, targets, segments, sequences).features;
  });
  // The naive form: per token φ_t = E_out[y_t] − p_t E_out (a second [rows x V] x [V x H] GEMM per chunk).
  const double naive = median_seconds(repeats, [&] {
    auto features = torch::zeros({sequences, H});
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / V);
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t len = std::min(chunk, N - s);
      const auto logits = torch::matmul(hidden.narrow(0, s, len), weight.t());
      const auto p = torch::softmax(logits, -1);
      const auto phi = weight.index_select(0, targets.narrow(0, s, len)) - torch::matmul(p, weight);
      features.index_add_(0, segments.narrow(0, s, len), phi);
    }
    naive_out = features / static_cast<double>(length);
  });
  const double diff = (fact_out - naive_out).abs().max().item<double>();
  std::printf("{\"variant\": \"old-logprob pass\", \"seconds\": %.4f}\n", plain);
  std::printf("{\"variant\": \"+ factorised features\", \"seconds\": %.4f, \"overhead\": %.4f}\n", factorised,
              factorised / plain - 1.0);
  std::printf("{\"variant\": \"naive per-token features\", \"seconds\": %.4f, \"overhead\": %.4f}\n", naive + plain,
              naive / plain);
  std::printf("{\"max_abs_diff_factorised_vs_naive\": %.3g, \"naive_over_factorised_extra\": %.2f}\n", diff,
              naive / std::max(1e-9, factorised - plain));
  return diff < 1e-4 ? 0 : 1;
}
