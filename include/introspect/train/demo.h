// The embedded default run: a synthetic digit-reversal task with \boxed{} answers and a held-out split, a tiny
// Qwen3-architecture model, an SFT warm start on noisy demonstrations, then GRPO with the math verifier.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "introspect/config/schema.h"

namespace introspect::train {

struct DemoResult {
  double accuracy_before = 0, accuracy_after = 0;  // held-out, mean over train.eval_n samples per problem
  std::filesystem::path run_dir, checkpoint, export_dir;
};

// The demo's pieces, also used by tests: a random tiny Qwen3-architecture checkpoint with a byte-level
// tokenizer (dir/config.json, model.safetensors, tokenizer.json), and the task files (dir/sft.jsonl,
// train.jsonl, heldout.jsonl).
// `added_tokens` become non-special tokens 257.. of the tokenizer (and the model's vocabulary).
void write_demo_model(const std::filesystem::path& dir, uint64_t seed, const std::vector<std::string>& added_tokens = {});
void write_demo_task(const std::filesystem::path& dir, const config::DemoConfig& demo, uint64_t seed);
// MASA's toy task (demo.task=masa): see demo.cpp. Its model takes masa_toy_tokens() as added tokens.
void write_masa_task(const std::filesystem::path& dir, const config::DemoConfig& demo, uint64_t seed);
// G²RL's toy (demo.task=digit-set): the set of a number's digits, correct in any order.
void write_digit_set_task(const std::filesystem::path& dir, const config::DemoConfig& demo, uint64_t seed);
const std::vector<std::string>& masa_toy_tokens();

// Runs both phases under `out` (data/, init/, sft/, grpo/). `overrides` (train.seed=2, demo.grpo_steps=30, ...)
// apply to both phases on top of the demo's own settings.
DemoResult run_demo(const std::vector<std::string>& overrides, const std::filesystem::path& out, bool resume_auto);

}  // namespace introspect::train
