#include "introspect/train/demo.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>

#include "introspect/config/config.h"
#include "introspect/io/log.h"
#include "introspect/model/decoder.h"
#include "introspect/tokenizer/tokenizer.h"
#include "introspect/train/checkpoint.h"
#include "introspect/train/trainer.h"

namespace introspect::train {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

// A byte-level BPE tokenizer.json without merges: one token per byte, plus an end-of-text token.
void write_byte_tokenizer(const fs::path& dir) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::byte_level_symbol(static_cast<uint8_t>(b))] = b;
  const json tok{{"version", "1.0"},
                 {"added_tokens", json::array({{{"id", 256}, {"content", "<|endoftext|>"}, {"single_word", false},
                                                {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                                {"special", true}}})},
                 {"normalizer", nullptr},
                 {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                    {"use_regex", true}}},
                 {"post_processor", nullptr},
                 {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                              {"use_regex", true}}},
                 {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                            {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                            {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                            {"vocab", vocab}, {"merges", json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tok.dump(1) << "\n";
  std::ofstream(dir / "tokenizer_config.json")
      << json{{"eos_token", "<|endoftext|>"}, {"pad_token", "<|endoftext|>"}, {"model_max_length", 256}}.dump(1)
      << "\n";
}

model::ModelArch demo_arch() {
  model::ModelArch a;
  a.model_type = "qwen3";
  a.vocab_size = 257;
  a.hidden_size = 96;
  a.intermediate_size = 256;
  a.num_layers = 3;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.head_dim = 24;
  a.rms_norm_eps = 1e-6;
  a.rope_theta = 10000.0;
  a.max_position_embeddings = 256;
  a.tie_word_embeddings = true;
  a.qk_norm = true;
  a.eos_token_ids = {256};
  return a;
}

}  // namespace

// Digit reversal: "reverse 4713" is answered \boxed{3174}. Numbers use the digits 1-9 (so no leading zeros) and
// the held-out numbers never appear in training. The rule generalises, so held-out accuracy measures it.
void write_demo_task(const fs::path& dir, const config::DemoConfig& d, uint64_t seed) {
  fs::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> digit(1, 9);
  std::set<std::string> seen;
  std::vector<std::string> numbers;
  const size_t wanted = static_cast<size_t>(d.heldout + d.train_problems);
  while (numbers.size() < wanted) {
    std::string n;
    for (int64_t i = 0; i < d.digits; ++i) n += static_cast<char>('0' + digit(rng));
    if (seen.insert(n).second) numbers.push_back(n);
  }
  auto reversed = [](std::string s) { return std::string(s.rbegin(), s.rend()); };
  std::ofstream eval(dir / "heldout.jsonl"), train(dir / "train.jsonl"), sft(dir / "sft.jsonl");
  for (size_t i = 0; i < numbers.size(); ++i) {
    const json row{{"problem", "reverse " + numbers[i]}, {"answer", reversed(numbers[i])}};
    (i < static_cast<size_t>(d.heldout) ? eval : train) << row.dump() << "\n";
  }
  // Noisy demonstrations: with probability label_noise the shown answer is wrong, either the number copied
  // unreversed or the reversal with two digits swapped.
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (size_t i = static_cast<size_t>(d.heldout); i < numbers.size(); ++i) {
    std::string shown = reversed(numbers[i]);
    if (u(rng) < d.label_noise) {
      if (u(rng) < 0.5) {
        shown = numbers[i];
      } else {
        const size_t a = rng() % shown.size();
        size_t b = rng() % shown.size();
        if (b == a) b = (a + 1) % shown.size();
        std::swap(shown[a], shown[b]);
      }
    }
    sft << json{{"problem", "reverse " + numbers[i]}, {"answer", reversed(numbers[i])},
                {"solution", "\\boxed{" + shown + "}"}}.dump()
        << "\n";
  }
}

void write_demo_model(const fs::path& dir, uint64_t seed) {
  fs::create_directories(dir);
  model::CausalLM::random(demo_arch(), seed).save(dir);
  write_byte_tokenizer(dir);
}

namespace {

double eval_accuracy_at(const fs::path& metrics, bool first) {
  std::ifstream in(metrics);
  std::string line;
  double value = std::numeric_limits<double>::quiet_NaN();
  while (std::getline(in, line)) {
    const auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("eval/accuracy") || j["eval/accuracy"].is_null()) continue;
    value = j["eval/accuracy"].get<double>();
    if (first) break;
  }
  return value;
}

}  // namespace

DemoResult run_demo(const std::vector<std::string>& overrides, const fs::path& out, bool resume_auto) {
  const config::Config base = config::from_overrides(overrides);
  const auto& d = base.demo;
  const uint64_t seed = static_cast<uint64_t>(base.train.seed);
  fs::create_directories(out / "data");
  write_demo_task(out / "data", d, seed);
  const fs::path init = out / "init";
  if (!fs::exists(init / "DONE")) {
    fs::remove_all(init);
    write_demo_model(init, seed);
    std::ofstream(init / "DONE") << "\n";
  }

  // Settings of both phases; the user's overrides are applied on top of each phase's (see finish()).
  auto phase = [&](const std::string& name) {
    config::Config c;
    c.train.seed = base.train.seed;
    c.run.out_dir = (out / name).string();
    c.run.name = "demo-" + name;
    c.data.prompt_field = "problem";
    c.data.answer_field = "answer";
    c.data.prompt_template = "{problem}";
    c.data.chat_template = "custom";
    c.data.custom_chat_template = "{user}";
    c.data.max_prompt_tokens = 32;
    c.rollout.max_new_tokens = 16;
    c.reward.modules = {"math"};
    c.reward.math.extract = "boxed";
    return c;
  };
  config::Config sft = phase("sft");
  sft.train.mode = "sft";
  sft.model.path = init.string();
  sft.data.train_path = (out / "data" / "sft.jsonl").string();
  sft.data.response_field = "solution";
  sft.train.total_steps = d.sft_steps;
  sft.train.prompts_per_step = 64;
  sft.train.micro_batch_size = 64;
  sft.train.lr = 3e-3;
  sft.train.warmup_steps = 10;
  sft.train.weight_decay = 0.0;
  sft.train.save_every = 0;
  sft.train.keep_last = 1;
  auto finish = [&](config::Config& c) {
    const std::string dir = c.run.out_dir;
    config::apply_overrides(c, overrides);
    c.run.out_dir = dir;
  };
  finish(sft);
  log::info("demo: SFT warm start (", sft.train.total_steps, " steps) in ", sft.run.out_dir);
  run(sft, {resume_auto});

  config::Config grpo = phase("grpo");
  grpo.train.mode = "grpo";
  grpo.model.path = (out / "sft" / "export").string();
  grpo.data.train_path = (out / "data" / "train.jsonl").string();
  grpo.data.eval_path = (out / "data" / "heldout.jsonl").string();
  grpo.rollout.n = 8;
  grpo.rollout.temperature = 1.0;
  grpo.train.total_steps = d.grpo_steps;
  grpo.train.prompts_per_step = 16;
  grpo.train.mini_batch_size = 128;
  grpo.train.micro_batch_size = 128;
  grpo.train.lr = 2e-4;
  grpo.train.weight_decay = 0.0;
  grpo.train.eval_every = d.grpo_steps;
  grpo.train.eval_n = 4;
  grpo.train.save_every = std::max<int64_t>(1, d.grpo_steps / 3);
  grpo.algo.adv_epsilon = 1e-6;
  finish(grpo);
  log::info("demo: GRPO (", grpo.train.total_steps, " steps) in ", grpo.run.out_dir);
  const auto result = run(grpo, {resume_auto});

  DemoResult r;
  r.run_dir = out;
  r.accuracy_before = eval_accuracy_at(out / "grpo" / "metrics.jsonl", true);
  r.accuracy_after = eval_accuracy_at(out / "grpo" / "metrics.jsonl", false);
  r.export_dir = result.export_dir;
  if (const auto latest = latest_checkpoint(out / "grpo" / "checkpoints")) r.checkpoint = latest->dir;
  return r;
}

}  // namespace introspect::train
