#include "introspect/rollout/generator.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>

#include "introspect/config/schema.h"
#include "introspect/tokenizer/tokenizer.h"

namespace introspect::rollout {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
  }
  return "?";
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
}  // namespace

SamplingParams sampling_params(const config::RolloutConfig& r) {
  SamplingParams p;
  p.temperature = r.temperature;
  p.top_p = r.top_p;
  p.top_k = r.top_k;
  p.min_p = r.min_p;
  p.max_new_tokens = r.max_new_tokens;
  p.n = r.n;
  p.seed = static_cast<uint64_t>(r.seed);
  p.stop = r.stop;
  p.stop_token_ids.assign(r.stop_token_ids.begin(), r.stop_token_ids.end());
  return p;
}

uint64_t sample_seed(uint64_t seed, int64_t prompt_index, int64_t sample_index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(prompt_index)) ^
                    static_cast<uint64_t>(sample_index));
}

std::pair<at::Tensor, at::Tensor> sample_tokens(const at::Tensor& logits, const SamplingParams& p,
                                                const at::Tensor& uniforms) {
  const auto l = logits.to(torch::kFloat);
  if (p.is_greedy()) {
    const auto tok = l.argmax(-1);
    return {tok, torch::log_softmax(l, -1).gather(1, tok.unsqueeze(1)).squeeze(1)};
  }
  const int64_t V = l.size(1);
  const auto logp = torch::log_softmax(l / p.temperature, -1);
  // The cumulative sums below run in fp64, so tiny probabilities keep their share of the CDF.
  auto probs = logp.exp().to(torch::kDouble);
  if (p.top_k > 0 && p.top_k < V) {
    const auto kth = std::get<0>(probs.topk(p.top_k, -1)).select(1, p.top_k - 1).unsqueeze(1);
    probs = torch::where(probs >= kth, probs, torch::zeros_like(probs));  // ties at the k-th value stay, as HF
  }
  if (p.top_p < 1.0) {
    probs = probs / probs.sum(-1, true);
    const auto [sorted, order] = probs.sort(-1, /*descending=*/true);
    const auto keep_sorted = (sorted.cumsum(-1) - sorted) < p.top_p;  // the mass before a token is below top_p
    const auto keep = torch::zeros_like(keep_sorted).scatter(1, order, keep_sorted);
    probs = torch::where(keep, probs, torch::zeros_like(probs));
  }
  if (p.min_p > 0.0) {
    const auto threshold = p.min_p * std::get<0>(probs.max(-1, true));
    probs = torch::where(probs >= threshold, probs, torch::zeros_like(probs));
  }
  const auto cdf = probs.cumsum(-1);
  const auto target = uniforms.to(torch::kDouble).unsqueeze(1) * cdf.select(1, V - 1).unsqueeze(1);
  const auto tok = torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(V - 1);
  return {tok, logp.gather(1, tok.unsqueeze(1)).squeeze(1)};
}

Generator::Generator(const model::CausalLM& model, int64_t max_batch, int64_t kv_budget_bytes,
                     const tokenizer::Tokenizer* tokenizer)
    : model_(model), max_batch_(max_batch), kv_budget_bytes_(kv_budget_bytes), tokenizer_(tokenizer) {
  if (max_batch < 1) throw std::invalid_argument("Generator: max_batch must be at least 1");
}

std::vector<Sample> Generator::generate(const std::vector<Prompt>& prompts, const SamplingParams& params,
                                        const std::function<void(int64_t)>& progress) const {
  const auto& arch = model_.arch();
  if (params.n < 1) throw std::invalid_argument("generate: n must be at least 1");
  if (!params.stop.empty() && !tokenizer_) throw std::invalid_argument("generate: stop strings need a tokenizer");
  std::vector<int64_t> limits(prompts.size()), counts(prompts.size());
  int64_t max_len = 1, total = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].ids.empty()) throw std::invalid_argument("generate: prompt " + std::to_string(i) + " is empty");
    for (const int32_t id : prompts[i].ids) {
      if (id < 0 || id >= arch.vocab_size) {
        throw std::invalid_argument("generate: prompt " + std::to_string(i) + " has token id " + std::to_string(id) +
                                    " outside the model's vocabulary of " + std::to_string(arch.vocab_size));
      }
    }
    limits[i] = prompts[i].max_new_tokens > 0 ? prompts[i].max_new_tokens : params.max_new_tokens;
    if (limits[i] < 1) throw std::invalid_argument("generate: max_new_tokens must be at least 1");
    max_len = std::max<int64_t>(max_len, static_cast<int64_t>(prompts[i].ids.size()) + limits[i]);
    counts[i] = prompts[i].n > 0 ? prompts[i].n : params.n;
    if (prompts[i].n == 0 || prompts[i].n < -1)
      throw std::invalid_argument("generate: prompt " + std::to_string(i) + " asks for " +
                                  std::to_string(prompts[i].n) + " samples");
    total += counts[i];
  }
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(max_batch_, total));
  const int64_t kv_bytes = model::KVCache::bytes_needed(arch, slots, max_len, model_.dtype());
  if (kv_budget_bytes_ > 0 && kv_bytes > kv_budget_bytes_) {
    throw std::runtime_error("generate: the KV cache needs " + std::to_string(kv_bytes >> 20) + " MiB (" +
                             std::to_string(slots) + " slots x " + std::to_string(max_len) + " tokens x " +
                             std::to_string(arch.num_layers) + " layers) but the budget is " +
                             std::to_string(kv_budget_bytes_ >> 20) +
                             " MiB: lower rollout.max_batch or the lengths, or raise rollout.kv_budget_mb");
  }
  std::vector<Sample> results(total);
  if (total == 0) return results;
  model::KVCache cache(arch, slots, max_len, model_.dtype());
  model_.pack_for_inference(slots);
  const std::set<int32_t> stop_ids(params.stop_token_ids.begin(), params.stop_token_ids.end());
  std::set<int32_t> eos;
  for (const auto id : arch.eos_token_ids) eos.insert(static_cast<int32_t>(id));
  if (tokenizer_ && tokenizer_->eos_id()) eos.insert(*tokenizer_->eos_id());

  struct Active {
    int64_t result, pos, limit;
    std::mt19937_64 rng;
  };
  struct Prefix {
    std::vector<at::Tensor> k, v;
    at::Tensor logits;  // [V] at the last prompt position
    int64_t remaining;
  };
  std::vector<std::optional<Active>> active(slots);
  std::map<int64_t, Prefix> prefixes;  // prompts whose other samples still wait for a slot
  int64_t next = 0, done = 0;
  int64_t next_prompt = 0, next_sample = 0;  // the pending sample `next`, as (prompt, sample of that prompt)

  auto hits_stop_string = [&](const std::vector<int32_t>& tokens) {
    if (params.stop.empty()) return false;
    const std::string text = tokenizer_->decode(tokens);
    return std::any_of(params.stop.begin(), params.stop.end(),
                       [&](const std::string& stop) { return !stop.empty() && text.find(stop) != std::string::npos; });
  };
  // Appends a token to a sample; true when the sample is finished.
  auto append = [&](Active& a, int64_t token, float logprob) {
    Sample& s = results[a.result];
    s.tokens.push_back(static_cast<int32_t>(token));
    s.logprobs.push_back(logprob);
    bool finished = true;
    if (eos.count(static_cast<int32_t>(token))) {
      s.finish = FinishReason::kEos;
    } else if (stop_ids.count(static_cast<int32_t>(token)) || hits_stop_string(s.tokens)) {
      s.finish = FinishReason::kStop;
    } else if (static_cast<int64_t>(s.tokens.size()) >= a.limit) {
      s.finish = FinishReason::kLength;
    } else {
      finished = false;
    }
    if (finished && progress) progress(++done);
    return finished;
  };

  c10::NoGradGuard no_grad;
  while (true) {
    // Fill free slots with pending samples; the first sample of a prompt prefills, the others copy its cache.
    for (int64_t s = 0; s < slots; ++s) {
      while (!active[s] && next < total) {
        const int64_t i = next_prompt, j = next_sample;
        if (++next_sample == counts[i]) ++next_prompt, next_sample = 0;
        const int64_t len = static_cast<int64_t>(prompts[i].ids.size());
        results[next].prompt_index = i;
        results[next].sample_index = j;
        auto it = prefixes.find(i);
        if (it == prefixes.end()) {
          const auto ids = torch::tensor(std::vector<int64_t>(prompts[i].ids.begin(), prompts[i].ids.end())).unsqueeze(0);
          const auto out = model_.forward_cached(ids, torch::arange(len).unsqueeze(0), torch::tensor({s}), cache,
                                                 /*last_logits_only=*/true);
          Prefix pre{{}, {}, out.logits[0][0].clone(), counts[i]};
          if (counts[i] > 1) {
            for (int64_t l = 0; l < arch.num_layers; ++l) {
              pre.k.push_back(cache.k[l][s].narrow(1, 0, len).clone());
              pre.v.push_back(cache.v[l][s].narrow(1, 0, len).clone());
            }
          }
          it = prefixes.emplace(i, std::move(pre)).first;
        } else {
          for (int64_t l = 0; l < arch.num_layers; ++l) {
            cache.k[l][s].narrow(1, 0, len).copy_(it->second.k[l]);
            cache.v[l][s].narrow(1, 0, len).copy_(it->second.v[l]);
          }
        }
        Active a{next, len, limits[i],
                 std::mt19937_64(sample_seed(params.seed, prompts[i].stream >= 0 ? prompts[i].stream : i, j))};
        const double u = params.is_greedy() ? 0.0 : uniform01(a.rng);
        const auto [tok, lp] = sample_tokens(it->second.logits.unsqueeze(0), params, torch::tensor({u}));
        if (--it->second.remaining == 0) prefixes.erase(it);
        ++next;
        if (!append(a, tok.item<int64_t>(), lp.item<float>())) active[s] = std::move(a);
      }
    }
    // Keep the active sequences in slots 0..B-1: move the last one into each hole (one slot's cache copied
    // per finished sequence), so the decode step reads the cache as a view instead of gathering it.
    int64_t B = 0;
    for (int64_t s = 0; s < slots; ++s) {
      if (!active[s]) continue;
      if (s != B) {
        for (int64_t l = 0; l < arch.num_layers; ++l) {
          cache.k[l][B].copy_(cache.k[l][s]);
          cache.v[l][B].copy_(cache.v[l][s]);
        }
        active[B] = std::move(active[s]);
        active[s].reset();
      }
      ++B;
    }
    if (B == 0) break;

    // One decode step for every active slot.
    std::vector<int64_t> last(B), pos(B);
    std::vector<double> u(B, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      Active& a = *active[b];
      last[b] = results[a.result].tokens.back();
      pos[b] = a.pos;
      if (!params.is_greedy()) u[b] = uniform01(a.rng);
    }
    const auto logits = model_.forward_cached(torch::tensor(last).view({B, 1}), torch::tensor(pos).view({B, 1}),
                                              torch::arange(B), cache)
                            .logits.select(1, 0);
    const auto [tok, lp] = sample_tokens(logits, params, torch::tensor(u, torch::kDouble));
    const auto tok_a = tok.accessor<int64_t, 1>();
    const auto lp_a = lp.accessor<float, 1>();
    for (int64_t b = 0; b < B; ++b) {
      Active& a = *active[b];
      ++a.pos;
      if (append(a, tok_a[b], lp_a[b])) active[b].reset();
    }
  }
  return results;
}

}  // namespace introspect::rollout
