// Generation throughput of the engine's Generator. Reads {"prompt_ids": [...], "max_new_tokens": n} lines and
// times generate() alone (model load excluded). With --static, every sequence runs to the longest limit, as a
// static batch without per-sequence exit would.
//   bench_generate MODEL_DIR PROMPTS.jsonl MAX_BATCH THREADS [--static]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "introspect/core/runtime.h"
#include "introspect/model/decoder.h"
#include "introspect/rollout/generator.h"

using namespace introspect;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench_generate MODEL_DIR PROMPTS.jsonl MAX_BATCH THREADS [--static]\n");
    return 2;
  }
  core::init_torch(std::stoll(argv[4]));
  const bool static_batch = argc > 5 && std::string(argv[5]) == "--static";
  const auto model = model::CausalLM::load(argv[1]);
  std::vector<rollout::Prompt> prompts;
  int64_t useful = 0, longest = 0;
  std::ifstream in(argv[2]);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    prompts.push_back({j["prompt_ids"].get<std::vector<int32_t>>(), j["max_new_tokens"].get<int64_t>()});
    useful += prompts.back().max_new_tokens;
    longest = std::max(longest, prompts.back().max_new_tokens);
  }
  if (static_batch)
    for (auto& p : prompts) p.max_new_tokens = longest;
  rollout::SamplingParams params;
  params.temperature = 1.0;
  params.seed = 1;
  const auto t0 = std::chrono::steady_clock::now();
  const auto samples = rollout::Generator(model, std::stoll(argv[3])).generate(prompts, params);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t generated = 0;
  for (const auto& x : samples) generated += static_cast<int64_t>(x.tokens.size());
  std::printf("{\"seconds\": %.3f, \"generated\": %lld, \"useful\": %lld, \"useful_tokens_per_s\": %.1f}\n", s,
              static_cast<long long>(generated), static_cast<long long>(useful), useful / s);
  return 0;
}
