// introspect eval: n samples per problem of a held-out set, graded by the math verifier, summarised as pass@1,
// unbiased pass@k and maj@k; results.json (the summary) and problems.jsonl (every sample) under --out.
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "output.h"
#include "introspect/config/config.h"
#include "introspect/core/runtime.h"
#include "introspect/io/dataset.h"
#include "introspect/io/log.h"
#include "introspect/io/progress.h"
#include "introspect/model/decoder.h"
#include "introspect/rollout/generator.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"
#include "introspect/train/evaluate.h"

namespace introspect::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

// "1,4,16" -> {1, 4, 16}, sorted and unique.
std::vector<int64_t> parse_ks(const std::string& text) {
  std::vector<int64_t> ks;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t k = 0;
    try {
      k = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || k < 1)
      throw std::invalid_argument("--k: '" + item + "' is not a positive integer (expected a list such as 1,4,16)");
    ks.push_back(k);
  }
  if (ks.empty()) throw std::invalid_argument("--k: empty list (expected a list such as 1,4,16)");
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

// 1, 2, 4, ... up to n, and n itself.
std::vector<int64_t> default_ks(int64_t n) {
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < n; k *= 2) ks.push_back(k);
  ks.push_back(n);
  return ks;
}

std::string fixed(double v, int digits = 3) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

int eval(const EvalOptions& o) {
  try {
    auto cfg = o.config.empty() ? config::from_overrides(o.overrides) : config::load(o.config, o.overrides);
    if (!o.model.empty()) cfg.model.path = o.model;
    if (!o.data.empty()) cfg.data.eval_path = o.data;
    // n: --n, else rollout.n from --config or an override, else 1 (rollout.n's default is the GRPO group size).
    if (o.n > 0) {
      cfg.rollout.n = o.n;
    } else if (o.config.empty()) {
      bool set = false;
      for (const auto& ov : o.overrides) set |= ov.rfind("rollout.n=", 0) == 0;
      if (!set) cfg.rollout.n = 1;
    }
    const int64_t n = cfg.rollout.n;
    const auto ks = o.ks.empty() ? default_ks(n) : parse_ks(o.ks);
    if (ks.back() > n)
      throw std::invalid_argument("--k " + std::to_string(ks.back()) + " is larger than n = " + std::to_string(n) +
                                  " samples per problem; pass@k and maj@k need k <= n (raise --n or drop that k)");
    if (cfg.model.path.empty()) throw std::invalid_argument("no model: give --model DIR (or model.path)");
    if (!fs::is_directory(cfg.model.path))
      throw std::invalid_argument(cfg.model.path + ": no such model folder (an HF checkpoint folder)");
    if (cfg.data.eval_path.empty()) throw std::invalid_argument("no dataset: give --data FILE (or data.eval_path)");
    if (!fs::is_regular_file(cfg.data.eval_path))
      throw std::invalid_argument(cfg.data.eval_path + ": no such dataset file");

    log::init(cfg.log.level);
    core::init_torch(cfg.run.threads);
    const auto dopt = io::dataset_options(cfg.data);
    auto dataset = io::Dataset::load(cfg.data.eval_path, dopt);
    if (dataset.skipped) log::warn(cfg.data.eval_path, ": skipped ", dataset.skipped, " malformed rows");
    if (o.limit > 0 && static_cast<int64_t>(dataset.problems.size()) > o.limit)
      dataset.problems.resize(static_cast<size_t>(o.limit));

    const auto tok = tokenizer::Tokenizer::load(cfg.model.path);
    const tokenizer::PromptFormatter format(cfg.data, *tok, cfg.model.path, o.chat_template);
    const auto model = model::CausalLM::load(cfg.model.path, cfg.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat);

    const auto& r = cfg.rollout;
    auto params = rollout::sampling_params(r);
    params.n = n;

    // Create the output folder before the (long) generation, so an unwritable --out fails at once.
    const fs::path out = o.out.empty() ? fs::path("runs/eval") : fs::path(o.out);
    fs::create_directories(out);

    const rollout::Generator generator(model, r.max_batch, r.kv_budget_mb << 20, tok.get());
    io::Progress bar("eval", static_cast<int64_t>(dataset.problems.size()) * n,
                     io::Progress::resolve_mode(cfg.log.progress, 2), cfg.log.progress_interval_s, std::cerr);
    std::vector<train::ProblemResult> results;
    int64_t last = 0;
    const auto s = train::evaluate(generator, *tok, format, dataset.problems, params, cfg.reward.math,
                                   cfg.data.max_prompt_tokens, ks, params.seed, &results, [&](int64_t done) {
                                     bar.advance(done - last);
                                     last = done;
                                   });
    bar.finish();
    if (s.skipped)
      log::warn(s.skipped, " problems skipped: prompt longer than data.max_prompt_tokens=", cfg.data.max_prompt_tokens);

    // problems.jsonl: one line per problem, every sample with its answer and grade.
    std::string lines;
    for (const auto& pr : results) {
      const auto& p = dataset.problems[static_cast<size_t>(pr.index)];
      ordered_json line{{"index", pr.index}, {"source", pr.source}, {"prompt", p.prompt}, {"gold", p.answer},
                        {"skipped", pr.skipped}};
      int64_t c = 0;
      ordered_json samples = ordered_json::array();
      for (size_t i = 0; i < pr.responses.size(); ++i) {
        c += pr.correct[i];
        samples.push_back({{"response", pr.responses[i]}, {"answer", pr.answers[i]}, {"correct", pr.correct[i]},
                           {"tokens", pr.response_tokens[i]}, {"finish", rollout::finish_reason_name(pr.finish[i])}});
      }
      line["correct"] = c;
      line["pass@1"] =
          pr.skipped ? ordered_json(nullptr) : ordered_json(static_cast<double>(c) / static_cast<double>(n));
      line["samples"] = std::move(samples);
      lines += dump(line) + "\n";
    }

    ordered_json pass_k = ordered_json::object(), maj_k = ordered_json::object();
    for (const auto& [k, v] : s.pass_at_k) pass_k[std::to_string(k)] = v;
    for (const auto& [k, v] : s.maj_at_k) maj_k[std::to_string(k)] = v;
    const ordered_json summary{
        {"model", cfg.model.path},
        {"dataset", cfg.data.eval_path},
        {"n", n},
        {"ks", ks},
        {"pass@1", s.pass_at_1},
        {"pass@k", pass_k},
        {"maj@k", maj_k},
        {"problems", s.problems},
        {"skipped", s.skipped},
        {"samples", s.samples},
        {"mean_response_tokens", s.mean_response_tokens},
        {"seconds", s.seconds},
        {"chat_template", format.chat_template().name()},
        {"extract", cfg.reward.math.extract},
        {"sampling",
         {{"temperature", params.temperature}, {"top_p", params.top_p}, {"top_k", params.top_k},
          {"min_p", params.min_p}, {"max_new_tokens", params.max_new_tokens}, {"seed", params.seed},
          {"stop", params.stop}, {"stop_token_ids", params.stop_token_ids}, {"max_batch", r.max_batch}}}};
    write_atomic(out / "problems.jsonl", lines);
    write_atomic(out / "results.json", dump(summary, 2) + "\n");
    config::save_yaml(cfg, out / "config.yaml");

    std::string line = "eval: " + std::to_string(s.problems) + " problems x " + std::to_string(n) + " samples";
    if (s.skipped) line += " (" + std::to_string(s.skipped) + " skipped)";
    line += ": pass@1 " + fixed(s.pass_at_1);
    for (const auto& [k, v] : s.pass_at_k)
      if (k > 1) line += " pass@" + std::to_string(k) + " " + fixed(v);
    for (const auto& [k, v] : s.maj_at_k)
      if (k > 1) line += " maj@" + std::to_string(k) + " " + fixed(v);
    line += "; " + fixed(s.mean_response_tokens, 1) + " tokens/response, " + fixed(s.seconds, 1) + " s -> " +
            (out / "results.json").string();
    std::printf("%s\n", line.c_str());
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "introspect eval: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace introspect::cli
