// The GPU training path on a Qwen3-1.7B-shaped random model: fp32 master weights, bf16 autocast, SDPA (flash
// for unpadded causal rows), the fused LM-head log-prob with its recomputing backward, and AdamW. Reports
// tokens/s and MFU for training steps, and decode tokens/s against the HBM roofline. Needs a GPU.
//   bench_gpu_step [--batch 4,8] [--seq 2048] [--steps 5] [--decode-batch 1,64] [--decode-steps 128] [--only train|decode]
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "introspect/dist/communicator.h"
#include "introspect/dist/optimizer.h"
#include "introspect/gpu/decode_graph.h"
#include "introspect/gpu/ops.h"
#include "introspect/model/decoder.h"

using introspect::model::CausalLM;
using introspect::model::ModelArch;

namespace {

ModelArch qwen3_1_7b() {
  ModelArch a;  // Qwen/Qwen3-1.7B config.json
  a.model_type = "qwen3";
  a.vocab_size = 151936, a.hidden_size = 2048, a.intermediate_size = 6144, a.num_layers = 28;
  a.num_heads = 16, a.num_kv_heads = 8, a.head_dim = 128, a.rms_norm_eps = 1e-6, a.rope_theta = 1e6;
  a.max_position_embeddings = 40960, a.tie_word_embeddings = true, a.qk_norm = true;
  return a;
}

// Parameters that take part in a matmul per token: every projection plus the (tied) LM head; the embedding
// lookup is not a matmul.
double matmul_params(const ModelArch& a) {
  const double attn = a.hidden_size * (2.0 * a.num_heads * a.head_dim + 2.0 * a.num_kv_heads * a.head_dim);
  const double mlp = 3.0 * a.hidden_size * a.intermediate_size;
  return a.num_layers * (attn + mlp) + static_cast<double>(a.vocab_size) * a.hidden_size;
}

std::string arg(int argc, char** argv, const char* name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], name)) return argv[i + 1];
  return fallback;
}

std::vector<int64_t> int_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) out.push_back(std::stoll(item));
  return out;
}

void train_batch(CausalLM& model, introspect::dist::DistributedAdamW& opt, const ModelArch& a, int64_t batch,
                 int64_t seq, int steps, const introspect::bench::Peaks& peaks);

// The engine's optimizer (dist::DistributedAdamW, one rank, stage 0) on the GPU.
void train_steps(const ModelArch& a, const std::vector<int64_t>& batches, int64_t seq, int steps,
                 const introspect::bench::Peaks& peaks) {
  auto model = CausalLM::random(a, 1, torch::kFloat);
  model.to(torch::kCUDA);
  auto comm = introspect::dist::from_environment(600);
  introspect::dist::DistributedAdamW opt(model.parameters(), {}, *comm, 0, 25);
  for (const int64_t batch : batches) {
    try {
      train_batch(model, opt, a, batch, seq, steps, peaks);
    } catch (const c10::OutOfMemoryError& e) {
      std::printf("| train step | batch %lld × seq %lld | out of GPU memory |\n", static_cast<long long>(batch),
                  static_cast<long long>(seq));
      opt.zero_grad();
      c10::cuda::CUDACachingAllocator::emptyCache();
    }
  }
}

void train_batch(CausalLM& model, introspect::dist::DistributedAdamW& opt, const ModelArch& a, int64_t batch,
                 int64_t seq, int steps, const introspect::bench::Peaks& peaks) {
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  const auto ids = torch::randint(a.vocab_size, {batch, seq}, opts.dtype(torch::kLong));
  const auto pos = torch::arange(seq, opts.dtype(torch::kLong)).repeat({batch, 1});
  const auto seg = torch::zeros({batch, seq}, opts.dtype(torch::kLong));
  const auto targets = ids.roll(-1, 1).reshape(-1);
  const auto adv = torch::randn({batch * seq}, opts);
  auto step = [&] {
    {
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      const auto out = model.forward(ids, pos, seg, /*want_logits=*/false);
      const auto hidden = out.hidden.reshape({-1, a.hidden_size}).to(torch::kBFloat16);
      const auto [logp, entropy] = introspect::gpu::fused_token_logprobs_entropy(hidden, model.lm_head_weight(), targets);
      const auto loss = -(logp * adv).mean() - 0.001 * entropy.mean();
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      loss.backward();
    }
    opt.step(1.0, 1e-6);
  };
  const double ms = introspect::bench::time_ms(step, 2, steps);
  const double tokens = static_cast<double>(batch) * seq, tok_s = tokens / (ms * 1e-3);
  const double n = matmul_params(a);
  // Model FLOPs per token: 6N for the matmuls, plus causal attention's 6·L·seq·(heads·head_dim) (QKᵀ and PV,
  // forward and backward, half the square).
  const double attn = 6.0 * a.num_layers * seq * a.num_heads * a.head_dim;
  const double flops_tok = 6.0 * n + attn;
  using namespace c10::cuda::CUDACachingAllocator;
  std::printf("| train step | batch %lld × seq %lld | %.1f ms | %.0f tokens/s | MFU %.1f%% of %.0f TFLOP/s (6N only: %.1f%%) |"
              " peak mem %.1f GiB |\n",
              static_cast<long long>(batch), static_cast<long long>(seq), ms, tok_s,
              100 * tok_s * flops_tok / peaks.bf16_flops, peaks.bf16_flops / 1e12,
              100 * tok_s * 6.0 * n / peaks.bf16_flops,
              getDeviceStats(0).allocated_bytes[0].peak / 1073741824.0);
  std::fflush(stdout);
  resetPeakStats(0);
}

void decode(const ModelArch& a, const std::vector<int64_t>& batches, int64_t steps, const introspect::bench::Peaks& peaks) {
  auto model = CausalLM::random(a, 2, torch::kBFloat16);
  model.to(torch::kCUDA);
  torch::NoGradGuard no_grad;
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  const int64_t prompt = 128;
  const double weight_bytes = 2.0 * matmul_params(a);
  for (const int64_t b : batches) {
    introspect::model::KVCache cache(a, b, prompt + steps + 1, torch::kBFloat16, torch::kCUDA);
    const auto slots = torch::arange(b, opts.dtype(torch::kLong));
    const auto ids = torch::randint(a.vocab_size, {b, prompt}, opts.dtype(torch::kLong));
    const auto prompt_pos = torch::arange(prompt, opts.dtype(torch::kLong)).repeat({b, 1});
    const auto first = model.forward_cached(ids, prompt_pos, slots, cache, true).logits.argmax(-1);  // [b, 1]
    // Roofline: each step reads every matmul weight once plus each sequence's keys and values so far (mean
    // length); the graphed step reads the whole cache (fixed shapes), which its roofline counts.
    const double kv_row = 2.0 * a.num_layers * a.num_kv_heads * a.head_dim * 2;
    const auto report = [&](const char* how, double s, double kv_len) {
      const double tok_s = b * steps / s, roof = b * peaks.hbm_bytes / (weight_bytes + kv_row * kv_len * b);
      std::printf("| decode, %s | batch %lld, %lld steps after a %lld-token prompt | %.2f ms/step | %.0f tokens/s |"
                  " roofline %.0f tokens/s (%.1f%%) |\n",
                  how, static_cast<long long>(b), static_cast<long long>(steps), static_cast<long long>(prompt),
                  1e3 * s / steps, tok_s, roof, 100 * tok_s / roof);
      std::fflush(stdout);
    };
    torch::Tensor eager_tokens;
    {
      std::vector<torch::Tensor> produced;
      auto next = first;
      torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t t = 0; t < steps; ++t) {
        const auto out = model.forward_cached(next, torch::full({b, 1}, prompt + t, opts.dtype(torch::kLong)), slots, cache);
        next = out.logits.argmax(-1);
        produced.push_back(next);
      }
      torch::cuda::synchronize();
      report("eager", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), prompt + steps / 2.0);
      eager_tokens = torch::cat(produced, 1);
    }
    {
      introspect::gpu::GraphedDecoder graphed(model, cache, b);
      graphed.greedy(first, prompt, 2);  // warm replay
      torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      const auto tokens = graphed.greedy(first, prompt, steps);
      torch::cuda::synchronize();
      report("CUDA graph", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
             static_cast<double>(cache.max_len));
      // Random bf16 weights give nearly tied logits, so one rounding difference (the graphed step sums over the
      // whole cache) sends a greedy path elsewhere: the first token is the like-for-like comparison.
      const double first_agree = (tokens.select(1, 0) == eager_tokens.select(1, 0)).to(torch::kDouble).mean().item<double>();
      const double agree = (tokens == eager_tokens).to(torch::kDouble).mean().item<double>();
      std::printf("|   graph vs eager tokens | first token %.1f%% identical, all %lld tokens %.1f%% |\n",
                  100 * first_agree, static_cast<long long>(steps), 100 * agree);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!introspect::gpu::cuda_usable(&why)) {
    std::fprintf(stderr, "bench_gpu_step needs a GPU: %s\n", why.c_str());
    return 2;
  }
  torch::set_num_threads(8);
  const auto a = qwen3_1_7b();
  const auto peaks = introspect::bench::device_peaks();
  std::printf("# GPU path on %s, Qwen3-1.7B shape (%.2fB matmul parameters)\n\n", peaks.name.c_str(),
              matmul_params(a) / 1e9);
  const std::string mode = arg(argc, argv, "--only", "all");
  if (mode == "all" || mode == "train")
    train_steps(a, int_list(arg(argc, argv, "--batch", "4,8")), std::stoll(arg(argc, argv, "--seq", "2048")),
                std::stoi(arg(argc, argv, "--steps", "5")), peaks);
  if (mode == "all" || mode == "decode")
    decode(a, int_list(arg(argc, argv, "--decode-batch", "1,64")), std::stoll(arg(argc, argv, "--decode-steps", "128")),
           peaks);
  return 0;
}
