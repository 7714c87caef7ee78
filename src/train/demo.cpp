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

// A byte-level BPE tokenizer.json without merges: one token per byte, an end-of-text token, then `added`
// (non-special tokens matched before byte splitting).
void write_byte_tokenizer(const fs::path& dir, const std::vector<std::string>& added) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::byte_level_symbol(static_cast<uint8_t>(b))] = b;
  auto added_token = [](int id, const std::string& content, bool special) {
    return json{{"id", id},        {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", special}};
  };
  json added_tokens = json::array({added_token(256, "<|endoftext|>", true)});
  for (size_t i = 0; i < added.size(); ++i) added_tokens.push_back(added_token(257 + static_cast<int>(i), added[i], false));
  const json tok{{"version", "1.0"},
                 {"added_tokens", added_tokens},
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

model::ModelArch demo_arch(int64_t added_tokens) {
  model::ModelArch a;
  a.model_type = "qwen3";
  a.vocab_size = 257 + added_tokens;
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

// G²RL's toy, a task with many correct answers: "digits 4713" is answered with the set of its digits, \boxed{\{1,3,4,7\}},
// in any of the 24 orders (the verifier compares sets). Numbers have distinct digits 1-9 and the held-out numbers
// never appear in training (their digit sets may). Half of the demonstrations list the digits in the number's own order and half reversed (a
// random order is beyond the tiny model), so the warm-started policy has two correct modes, and nothing in the
// reward prefers either: the diversity that GRPO leaves to drift and G²RL rewards. With probability label_noise a
// demonstration is wrong: one digit replaced by a digit the number lacks, or one digit dropped.
void write_digit_set_task(const fs::path& dir, const config::DemoConfig& d, uint64_t seed) {
  if (d.digits > 9) throw std::invalid_argument("demo.digits: the digit-set task needs at most 9 (distinct digits 1-9)");
  double available = 1;
  for (int64_t i = 0; i < d.digits; ++i) available *= static_cast<double>(9 - i);
  if (available < static_cast<double>(d.heldout + d.train_problems)) {
    throw std::invalid_argument("demo.train_problems + demo.heldout: only " + std::to_string(int64_t(available)) +
                                " numbers of " + std::to_string(d.digits) + " distinct digits exist");
  }
  fs::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto as_set = [](const std::string& digits) {
    std::string s = "\\{";
    for (size_t i = 0; i < digits.size(); ++i) s += (i ? "," : "") + std::string(1, digits[i]);
    return s + "\\}";
  };
  std::set<std::string> seen;
  std::vector<std::string> numbers;
  const size_t wanted = static_cast<size_t>(d.heldout + d.train_problems);
  while (numbers.size() < wanted) {
    std::string pool = "123456789";
    std::shuffle(pool.begin(), pool.end(), rng);
    const std::string n = pool.substr(0, static_cast<size_t>(d.digits));
    if (seen.insert(n).second) numbers.push_back(n);
  }
  std::ofstream eval(dir / "heldout.jsonl"), train(dir / "train.jsonl"), sft(dir / "sft.jsonl");
  for (size_t i = 0; i < numbers.size(); ++i) {
    std::string sorted = numbers[i];
    std::sort(sorted.begin(), sorted.end());
    const json row{{"problem", "digits " + numbers[i]}, {"answer", as_set(sorted)}};
    const bool heldout = i < static_cast<size_t>(d.heldout);
    (heldout ? eval : train) << row.dump() << "\n";
    if (heldout) continue;
    std::string shown = numbers[i];
    if (u(rng) < 0.5) std::reverse(shown.begin(), shown.end());
    if (u(rng) < d.label_noise) {
      const size_t at = rng() % shown.size();
      std::string missing;
      for (char c = '1'; c <= '9'; ++c)
        if (shown.find(c) == std::string::npos) missing += c;
      if (u(rng) < 0.5 && !missing.empty()) {  // nine digits leave no digit to swap in: drop one instead
        shown[at] = missing[rng() % missing.size()];
      } else {
        shown.erase(at, 1);
      }
    }
    sft << json{{"problem", row["problem"]}, {"answer", row["answer"]}, {"solution", "\\boxed{" + as_set(shown) + "}"}}.dump()
        << "\n";
  }
}

void write_demo_model(const fs::path& dir, uint64_t seed, const std::vector<std::string>& added_tokens) {
  fs::create_directories(dir);
  model::CausalLM::random(demo_arch(static_cast<int64_t>(added_tokens.size())), seed).save(dir);
  write_byte_tokenizer(dir, added_tokens);
}

const std::vector<std::string>& masa_toy_tokens() {
  static const std::vector<std::string> tokens{"<meta>", "</meta>", "{\"math_notion\":[", "],\"pass_rate\":",
                                               ",\"solution_length\":", "\\boxed{"};
  return tokens;
}

// MASA's toy: prompts whose difficulty the model can learn to predict, with pass rates spread as a gate needs.
// Draws are a fifth "guess N", whose answer is a hash of the problem (never learnable: pass rate 0); a fifth
// "flip N", whose answer is one hash bit (never learnable either, but a coin: pass rate near 1/2, so never
// zero-variance); a fifth reversals of 2-3 digit numbers (demonstrated without noise: pass rate near 1; there are
// few, so repeats are redrawn and they end nearer an eighth); two fifths reversals of 4-5 digit numbers, with
// demonstration noise growing with the length, some of it rambling that repeats the number without an answer
// (long wrong rollouts: what the early cutoff saves). The SFT set also teaches the meta format with
// uninformed predictions (pass rate uniform in 0..8, length uniform in 3..12) that MASA then has to calibrate.
// Meta prompts are "meta " + the problem. With demo.masa_overthinking, that share of the solutions (whatever their
// answer) first hesitate at length, from a stream of their own so that the problems and the rest stay the same.
void write_masa_task(const fs::path& dir, const config::DemoConfig& d, uint64_t seed) {
  fs::create_directories(dir);
  std::mt19937_64 rng(seed), hesitation_rng(seed ^ 0x6f76657274686e6bULL);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto digits = [&](int64_t n) {
    std::string s;
    for (int64_t i = 0; i < n; ++i) s += static_cast<char>('1' + rng() % 9);
    return s;
  };
  auto spelled = [](const std::string& digits) {
    static const char* const words[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
    std::string s;
    for (char c : digits) s += "the next digit is " + std::string(words[c - '0']) + ", ";
    return s;
  };
  std::set<std::string> seen;
  std::ofstream eval(dir / "heldout.jsonl"), train(dir / "train.jsonl"), sft(dir / "sft.jsonl");
  const int64_t total = d.heldout + d.train_problems;
  for (int64_t i = 0; i < total;) {
    const double family = u(rng);
    const bool guess = family < 0.2, flip = !guess && family < 0.4;
    const int64_t n = guess || flip  ? 4
                      : family < 0.6 ? 2 + static_cast<int64_t>(rng() % 2)
                                     : 4 + static_cast<int64_t>(rng() % 2);
    const std::string number = digits(n);
    const std::string problem = (guess ? "guess " : flip ? "flip " : "reverse ") + number;
    if (!seen.insert(problem).second) continue;
    std::string answer(number.rbegin(), number.rend());
    if (guess || flip) {
      std::mt19937_64 hash(seed ^ std::hash<std::string>{}(problem));
      answer.clear();
      for (int k = 0; k < (flip ? 1 : 4); ++k) answer += static_cast<char>('0' + hash() % (flip ? 2 : 10));
    }
    const bool heldout = i++ < d.heldout;
    (heldout ? eval : train) << json{{"problem", problem}, {"answer", answer}}.dump() << "\n";
    if (heldout) continue;
    // With demo.masa_working, each solution first spells out the digits it is about to box (for a guess or a
    // flip, the problem's own digits).
    auto solution = [&](const std::string& boxed, const std::string& worked) {
      return (d.masa_working ? spelled(worked) : std::string()) + "\\boxed{" + boxed + "}";
    };
    std::string shown = solution(answer, guess || flip ? number : answer);
    const double noise = guess || flip || n <= 3 ? 0.0 : d.label_noise * static_cast<double>(n - 3) / 2.0;
    if (u(rng) < noise) {
      const double kind = u(rng);
      if (kind < 0.4) {
        shown = solution(number, number);
      } else if (kind < 0.7) {
        std::string swapped = answer;
        std::swap(swapped[0], swapped[1]);
        shown = solution(swapped, swapped);
      } else {
        shown.clear();
        while (shown.size() < (d.masa_working ? 180u : 40u)) shown += d.masa_working ? spelled(number) : number + " ";
      }
    }
    if (d.masa_overthinking > 0 && u(hesitation_rng) < d.masa_overthinking)
      for (uint64_t k = 7 + hesitation_rng() % 7; k > 0; --k) shown = "wait, " + shown;
    sft << json{{"problem", problem}, {"answer", answer}, {"solution", shown}}.dump() << "\n";
    const json meta_json{{"math_notion", json::array()},
                         {"pass_rate", static_cast<int64_t>(rng() % 9)},
                         {"solution_length", d.masa_working ? 40 + static_cast<int64_t>(rng() % 100)
                                                            : 3 + static_cast<int64_t>(rng() % 10)}};
    sft << json{{"problem", "meta " + problem}, {"answer", answer},
                {"solution", "<meta></meta>" + meta_json.dump()}}.dump()
        << "\n";
  }
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
  const bool masa = d.task == "masa";
  if (masa) {
    write_masa_task(out / "data", d, seed);
  } else if (d.task == "digit-set") {
    write_digit_set_task(out / "data", d, seed);
  } else {
    write_demo_task(out / "data", d, seed);
  }
  const fs::path init = out / "init";
  if (!fs::exists(init / "DONE")) {
    fs::remove_all(init);
    // The toys with longer answers get their fixed pieces as single tokens, which keeps them short.
    static const std::vector<std::string> digit_set_tokens{"\\boxed{\\{", "\\}}"};
    write_demo_model(init, seed,
                     masa ? masa_toy_tokens() : d.task == "digit-set" ? digit_set_tokens : std::vector<std::string>{});
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
    // A digit-set answer is its two added tokens, the digits and commas, and the end of sequence: 2·digits + 2.
    c.rollout.max_new_tokens = masa                   ? (d.masa_working ? 192 : 40) + (d.masa_overthinking > 0 ? 80 : 0)
                               : d.task == "digit-set" ? std::max<int64_t>(16, 2 * d.digits + 4)
                                                       : 16;
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
