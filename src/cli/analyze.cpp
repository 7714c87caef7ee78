// introspect analyze: analyses of a model's behaviour, each sampling from a problem set.
//
// g2rl-geometry: the G²RL paper's gradient-geometry analysis (arXiv 2512.15687 §3.5, Fig. 3;
// ../shared/research/g2rl.md §7). k responses per problem are sampled, graded by the math verifier, and each gets
// its sequence feature Φ = E_outᵀ (c − p̄) from one forward pass at the sampling temperature (spec §2.3, the same
// pass the trainer uses). Within each problem every unordered pair of responses gives cos(Φ_i, Φ_j); the command
// reports their mean, the fraction below zero and a histogram, over all pairs and split by how many of the two
// responses are correct. Under --out: geometry.json (the summary), pairs.jsonl (every pair), samples.jsonl (every
// response) and config.yaml. scripts/plot_g2rl_geometry.py draws the histogram; the engine never runs Python.
//
// masa-gate: MASA-efficient's predictive gate measured on unseen problems, as the MASA paper's v2 Fig. 5a does
// (../shared/research/masa.md §3.2). Per problem, masa.meta_n meta rollouts give predicted pass rates and the gate
// decides (masa.gate_*); rollout.n solution rollouts, verified, give the truth: zero variance when all verdicts
// agree. Reports precision, recall and F1 of gating against zero variance, beside the base rate (the precision of
// gating every problem). Under --out: gate.json (the summary), problems.jsonl (every problem) and config.yaml.
#include <c10/core/ScalarType.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>

#include "commands.h"
#include "output.h"
#include "introspect/config/config.h"
#include "introspect/core/runtime.h"
#include "introspect/g2rl/g2rl.h"
#include "introspect/io/dataset.h"
#include "introspect/io/log.h"
#include "introspect/io/progress.h"
#include "introspect/masa/masa.h"
#include "introspect/model/decoder.h"
#include "introspect/reward/math_verifier.h"
#include "introspect/rollout/generator.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"

namespace introspect::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// NaN (a statistic over no pairs) as JSON null.
ordered_json number(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr); }

std::string fixed(double v, int digits = 3) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The analysis config: --config (or the defaults) with the overrides, then --model and --data; both must exist.
config::Config analysis_config(const std::string& path, const std::vector<std::string>& overrides,
                               const std::string& model, const std::string& data) {
  auto cfg = path.empty() ? config::from_overrides(overrides) : config::load(path, overrides);
  if (!model.empty()) cfg.model.path = model;
  if (!data.empty()) cfg.data.eval_path = data;
  if (cfg.model.path.empty()) throw std::invalid_argument("no model: give --model DIR (or model.path)");
  if (!fs::is_directory(cfg.model.path))
    throw std::invalid_argument(cfg.model.path + ": no such model folder (an HF checkpoint folder)");
  if (cfg.data.eval_path.empty()) throw std::invalid_argument("no dataset: give --data FILE (or data.eval_path)");
  if (!fs::is_regular_file(cfg.data.eval_path)) throw std::invalid_argument(cfg.data.eval_path + ": no such dataset file");
  return cfg;
}

// The problems to analyse: those whose prompts (the longest, prompt_tokens[i]) fit data.max_prompt_tokens, in file
// order or a seeded (rollout.seed) random subset, at most `limit` of them (0: all); returned in file order, with
// the count of those passed over as too long.
struct PickedProblems {
  std::vector<int64_t> indices;
  int64_t too_long = 0;
};
PickedProblems pick_problems(const std::vector<int64_t>& prompt_tokens, const config::Config& cfg, int64_t limit,
                             bool shuffle) {
  std::vector<int64_t> eligible;
  int64_t too_long = 0;
  for (size_t i = 0; i < prompt_tokens.size(); ++i) {
    if (prompt_tokens[i] > cfg.data.max_prompt_tokens)
      ++too_long;
    else
      eligible.push_back(static_cast<int64_t>(i));
  }
  if (too_long)
    log::warn(too_long, " problems passed over: prompt longer than data.max_prompt_tokens=", cfg.data.max_prompt_tokens);
  if (shuffle) {
    std::mt19937_64 rng(static_cast<uint64_t>(cfg.rollout.seed));
    std::shuffle(eligible.begin(), eligible.end(), rng);
  }
  if (limit > 0 && static_cast<int64_t>(eligible.size()) > limit) eligible.resize(static_cast<size_t>(limit));
  std::sort(eligible.begin(), eligible.end());
  if (eligible.empty())
    throw std::invalid_argument(cfg.data.eval_path + ": no problems to analyse" +
                                (too_long ? " (every prompt is longer than data.max_prompt_tokens)" : ""));
  return {eligible, too_long};
}

// A response graded by the math verifier: its extracted answer (normalised) and whether it equals the gold one.
struct Verdict {
  std::string answer;
  bool correct = false;
};
Verdict grade(const std::string& text, const std::string& gold, const config::Config& cfg) {
  const auto answer = reward::extract_answer(text, {cfg.reward.math.extract, cfg.reward.math.ignore_think});
  if (!answer) return {};
  return {reward::normalize_answer(*answer), reward::answers_equal(gold, *answer, cfg.reward.math.timeout_s)};
}

// fn(i) for i in [0, count) on a few threads: grading is CPU-bound string and algebra work, as in eval.
void for_each_on_threads(size_t count, const std::function<void(size_t)>& fn) {
  const size_t workers = std::max<size_t>(1, std::min<size_t>(4, std::thread::hardware_concurrency()));
  std::vector<std::future<void>> jobs;
  for (size_t w = 0; w < workers; ++w)
    jobs.push_back(std::async(std::launch::async, [&, w] {
      for (size_t i = w; i < count; i += workers) fn(i);
    }));
  for (auto& j : jobs) j.get();
}

// Sampling with a progress bar; every prompt's samples, checked to be all there.
std::vector<rollout::Sample> sample_all(const rollout::Generator& generator, const std::vector<rollout::Prompt>& prompts,
                                        const rollout::SamplingParams& params, const config::Config& cfg,
                                        const char* label) {
  const int64_t expected = static_cast<int64_t>(prompts.size()) * params.n;
  io::Progress bar(label, expected, io::Progress::resolve_mode(cfg.log.progress, 2), cfg.log.progress_interval_s,
                   std::cerr);
  int64_t last = 0;
  auto samples = generator.generate(prompts, params, [&](int64_t done) {
    bar.advance(done - last);
    last = done;
  });
  bar.finish();
  if (static_cast<int64_t>(samples.size()) != expected)
    throw std::runtime_error("generator returned " + std::to_string(samples.size()) + " samples, expected " +
                             std::to_string(expected));
  return samples;
}

// One sampled response, ready for the feature pass.
struct Response {
  int64_t slot = 0;  // the problem's position among the analysed problems (the pair group)
  int64_t sample = 0;
  const std::vector<int32_t>* prompt = nullptr;
  std::vector<int32_t> tokens;
  rollout::FinishReason finish = rollout::FinishReason::kLength;
  std::string text, answer;
  bool correct = false;
};

// Φ [b, H] fp32 of a few responses: one right-padded forward for the final hidden states, then the chunked pass
// (model::chunked_logprobs_and_features). Response token t of a sequence with a p-token prompt is predicted by
// hidden position p - 1 + t; the same layout as the trainer's old-log-prob pass.
at::Tensor response_features(const model::CausalLM& m, const std::vector<Response>& rs, size_t begin, size_t end,
                             double temperature) {
  const int64_t rows = static_cast<int64_t>(end - begin);
  int64_t L = 1;
  for (size_t i = begin; i < end; ++i)
    L = std::max<int64_t>(L, static_cast<int64_t>(rs[i].prompt->size() + rs[i].tokens.size()));
  std::vector<int64_t> ids(rows * L, 0), attention(rows * L, 0), hidden_rows, targets, segments;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& s = rs[begin + static_cast<size_t>(r)];
    const int64_t p = static_cast<int64_t>(s.prompt->size());
    for (int64_t t = 0; t < p; ++t) ids[r * L + t] = (*s.prompt)[t], attention[r * L + t] = 1;
    for (size_t t = 0; t < s.tokens.size(); ++t) {
      ids[r * L + p + static_cast<int64_t>(t)] = s.tokens[t];
      attention[r * L + p + static_cast<int64_t>(t)] = 1;
      hidden_rows.push_back(r * L + p - 1 + static_cast<int64_t>(t));
      targets.push_back(s.tokens[t]);
      segments.push_back(r);
    }
  }
  if (targets.empty()) return torch::zeros({rows, m.arch().hidden_size});
  c10::NoGradGuard no_grad;
  const auto hidden = m.forward_padded(torch::tensor(ids, torch::kLong).view({rows, L}),
                                       torch::tensor(attention, torch::kLong).view({rows, L}), /*want_logits=*/false)
                          .hidden;
  const auto flat = hidden.reshape({-1, hidden.size(-1)}).index_select(0, torch::tensor(hidden_rows, torch::kLong));
  return model::chunked_logprobs_and_features(flat, m.lm_head_weight(), torch::tensor(targets, torch::kLong),
                                              torch::tensor(segments, torch::kLong), rows, temperature)
      .features;
}

ordered_json pair_stats_json(const g2rl::PairStats& s, int64_t negative) {
  return {{"pairs", s.pairs}, {"mean_cos", number(s.mean_cos)}, {"neg_frac", number(s.neg_frac)},
          {"negative_pairs", negative}};
}

}  // namespace

int analyze_g2rl_geometry(const AnalyzeGeometryOptions& o) {
  try {
    auto cfg = analysis_config(o.config, o.overrides, o.model, o.data);
    if (o.k < 2) throw std::invalid_argument("--k " + std::to_string(o.k) + ": pairs need at least 2 responses per problem");
    if (o.problems < 0) throw std::invalid_argument("--problems must be >= 0 (0 means all)");
    if (o.bins < 1) throw std::invalid_argument("--bins must be >= 1");
    cfg.rollout.n = o.k;

    log::init(cfg.log.level);
    core::init_torch(cfg.run.threads);
    const auto start = Clock::now();
    const auto dopt = io::dataset_options(cfg.data);
    const auto dataset = io::Dataset::load(cfg.data.eval_path, dopt);
    if (dataset.skipped) log::warn(cfg.data.eval_path, ": skipped ", dataset.skipped, " malformed rows");

    const auto tok = tokenizer::Tokenizer::load(cfg.model.path);
    const tokenizer::PromptFormatter format(cfg.data, *tok, cfg.model.path, o.chat_template);

    // The problems (the paper analyses "30 randomly selected" ones: --shuffle).
    std::vector<std::vector<int32_t>> prompt_ids(dataset.problems.size());
    std::vector<int64_t> prompt_tokens(dataset.problems.size());
    for (size_t i = 0; i < dataset.problems.size(); ++i) {
      prompt_ids[i] = format.encode(dataset.problems[i].prompt);
      prompt_tokens[i] = static_cast<int64_t>(prompt_ids[i].size());
    }
    const auto picked = pick_problems(prompt_tokens, cfg, o.problems, o.shuffle);
    const auto& eligible = picked.indices;  // (not a structured binding: lambdas below capture it)
    const int64_t too_long = picked.too_long;
    const int64_t P = static_cast<int64_t>(eligible.size()), k = o.k;

    // Create the output folder before the (long) generation, so an unwritable --out fails at once.
    const fs::path out = o.out.empty() ? fs::path("runs/g2rl-geometry") : fs::path(o.out);
    fs::create_directories(out);

    const auto model = model::CausalLM::load(cfg.model.path, cfg.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
    const auto& r = cfg.rollout;
    auto params = rollout::sampling_params(r);
    params.n = k;
    // Φ at the sampling temperature (spec §2.3: "use the same T as sampling"); greedy sampling uses T = 1.
    const double feature_temperature = r.temperature > 0 ? r.temperature : 1.0;

    // 1. Sample.
    auto t0 = Clock::now();
    std::vector<rollout::Prompt> prompts;
    for (int64_t i : eligible) prompts.push_back({prompt_ids[static_cast<size_t>(i)], -1});
    const rollout::Generator generator(model, r.max_batch, r.kv_budget_mb << 20, tok.get());
    std::vector<Response> rs;
    for (auto& s : sample_all(generator, prompts, params, cfg, "sample")) {
      Response x;
      x.slot = s.prompt_index;
      x.sample = s.sample_index;
      x.prompt = &prompt_ids[static_cast<size_t>(eligible[static_cast<size_t>(s.prompt_index)])];
      x.tokens = std::move(s.tokens);
      x.finish = s.finish;
      rs.push_back(std::move(x));
    }
    const double t_generate = seconds_since(t0);

    // 2. Grade.
    t0 = Clock::now();
    for_each_on_threads(rs.size(), [&](size_t i) {
      auto& x = rs[i];
      x.text = tok->decode(x.tokens, /*skip_special=*/true);
      const auto v = grade(x.text, dataset.problems[static_cast<size_t>(eligible[static_cast<size_t>(x.slot)])].answer, cfg);
      x.answer = v.answer, x.correct = v.correct;
    });
    const double t_grade = seconds_since(t0);

    // 3. Features, a micro-batch at a time.
    t0 = Clock::now();
    std::vector<at::Tensor> feature_parts;
    {
      const size_t mb = static_cast<size_t>(std::max<int64_t>(1, cfg.train.micro_batch_size));
      io::Progress bar("features", static_cast<int64_t>(rs.size()), io::Progress::resolve_mode(cfg.log.progress, 2),
                       cfg.log.progress_interval_s, std::cerr);
      for (size_t b = 0; b < rs.size(); b += mb) {
        const size_t e = std::min(rs.size(), b + mb);
        feature_parts.push_back(response_features(model, rs, b, e, feature_temperature));
        bar.advance(static_cast<int64_t>(e - b));
      }
      bar.finish();
    }
    const auto features = torch::cat(feature_parts).to(torch::kDouble);
    const double t_features = seconds_since(t0);

    // 4. Geometry: every unordered pair within a problem.
    std::vector<int64_t> groups(rs.size());
    std::vector<uint8_t> correct(rs.size());
    for (size_t i = 0; i < rs.size(); ++i) groups[i] = rs[i].slot, correct[i] = rs[i].correct;
    const auto correct_t = torch::tensor(std::vector<int64_t>(correct.begin(), correct.end()), torch::kLong) > 0;
    const auto stats = g2rl::geometry(features, torch::tensor(groups, torch::kLong), correct_t);
    const int64_t pairs = stats.cosines.numel();
    const auto cos = stats.cosines.to(torch::kCPU, torch::kDouble).contiguous();
    const auto first = stats.first.to(torch::kCPU).contiguous(), second = stats.second.to(torch::kCPU).contiguous();
    const auto kind = stats.kind.to(torch::kCPU).contiguous();
    const double* cos_p = cos.data_ptr<double>();
    const int64_t* first_p = first.data_ptr<int64_t>();
    const int64_t* second_p = second.data_ptr<int64_t>();
    const int64_t* kind_p = kind.data_ptr<int64_t>();

    // Histograms (all, then per kind 2 cc / 1 mixed / 0 ii) and negative counts.
    const std::vector<std::pair<std::string, int64_t>> kinds{
        {"correct_correct", 2}, {"mixed", 1}, {"incorrect_incorrect", 0}};
    ordered_json hist_counts;
    hist_counts["all"] = g2rl::cosine_histogram(cos, o.bins);
    std::map<int64_t, int64_t> negative_by_kind;
    int64_t negative = 0;
    for (int64_t p = 0; p < pairs; ++p)
      if (cos_p[p] < 0) ++negative, ++negative_by_kind[kind_p[p]];
    for (const auto& [name, id] : kinds)
      hist_counts[name] = g2rl::cosine_histogram(cos.index({kind == id}), o.bins);
    std::vector<double> edges;
    for (int64_t b = 0; b <= o.bins; ++b) edges.push_back((2.0 * static_cast<double>(b) - static_cast<double>(o.bins)) / static_cast<double>(o.bins));

    // Per problem: correct count, mean cosine, negative fraction, response lengths.
    std::vector<int64_t> n_correct(P, 0), n_pairs(P, 0), n_negative(P, 0), tokens(P, 0);
    std::vector<double> cos_sum(P, 0.0);
    for (const auto& x : rs) n_correct[x.slot] += x.correct, tokens[x.slot] += static_cast<int64_t>(x.tokens.size());
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t g = groups[static_cast<size_t>(first_p[p])];
      ++n_pairs[g];
      cos_sum[g] += cos_p[p];
      n_negative[g] += cos_p[p] < 0;
    }
    const auto norms = features.norm(2, 1).contiguous();
    const double* norm_p = norms.data_ptr<double>();
    ordered_json per_problem = ordered_json::array();
    int64_t total_correct = 0, total_tokens = 0;
    for (int64_t g = 0; g < P; ++g) {
      const auto& pr = dataset.problems[static_cast<size_t>(eligible[static_cast<size_t>(g)])];
      total_correct += n_correct[g];
      total_tokens += tokens[g];
      per_problem.push_back(
          {{"index", eligible[static_cast<size_t>(g)]}, {"source", pr.source}, {"correct", n_correct[g]},
           {"pairs", n_pairs[g]},
           {"mean_cos", number(n_pairs[g] ? cos_sum[g] / static_cast<double>(n_pairs[g]) : NAN)},
           {"neg_frac", number(n_pairs[g] ? static_cast<double>(n_negative[g]) / static_cast<double>(n_pairs[g]) : NAN)},
           {"mean_response_tokens", static_cast<double>(tokens[g]) / static_cast<double>(k)}});
    }
    const double accuracy = static_cast<double>(total_correct) / static_cast<double>(rs.size());

    ordered_json split{{"all", pair_stats_json(stats.all, negative)}};
    for (const auto& [name, id] : kinds) {
      const auto& s = id == 2 ? stats.correct_correct : id == 1 ? stats.mixed : stats.incorrect_incorrect;
      split[name] = pair_stats_json(s, negative_by_kind[id]);
    }
    const ordered_json summary{
        {"model", cfg.model.path},
        {"dataset", cfg.data.eval_path},
        {"problems", P},
        {"k", k},
        {"responses", static_cast<int64_t>(rs.size())},
        {"pairs", pairs},
        {"expected_pairs", P * k * (k - 1) / 2},
        {"accuracy", accuracy},
        {"mean_response_tokens", static_cast<double>(total_tokens) / static_cast<double>(rs.size())},
        {"passed_over_long_prompts", too_long},
        {"selection", o.shuffle ? "shuffled" : "first"},
        {"stats", split},
        {"histogram", {{"bins", o.bins}, {"edges", edges}, {"counts", hist_counts}}},
        {"features",
         {{"definition", "Phi = E_out^T (c - p_bar), cosine with eps normalisation (g2rl.md sections 2.3, 7)"},
          {"temperature", feature_temperature},
          {"dim", features.size(1)},
          {"dtype", cfg.model.dtype},
          {"norm_mean", features.numel() ? norms.mean().item<double>() : 0.0},
          {"norm_min", features.numel() ? norms.min().item<double>() : 0.0},
          {"norm_max", features.numel() ? norms.max().item<double>() : 0.0}}},
        {"per_problem", per_problem},
        {"chat_template", format.chat_template().name()},
        {"extract", cfg.reward.math.extract},
        {"sampling",
         {{"n", k}, {"temperature", params.temperature}, {"top_p", params.top_p}, {"top_k", params.top_k},
          {"min_p", params.min_p}, {"max_new_tokens", params.max_new_tokens}, {"seed", params.seed},
          {"stop", params.stop}, {"stop_token_ids", params.stop_token_ids}, {"max_batch", r.max_batch}}},
        {"seconds", {{"generate", t_generate}, {"grade", t_grade}, {"features", t_features},
                     {"total", seconds_since(start)}}}};

    std::string pair_lines;
    for (int64_t p = 0; p < pairs; ++p) {
      const auto& a = rs[static_cast<size_t>(first_p[p])];
      const auto& b = rs[static_cast<size_t>(second_p[p])];
      pair_lines += dump(ordered_json{{"problem", eligible[static_cast<size_t>(a.slot)]}, {"i", a.sample},
                                      {"j", b.sample}, {"kind", kind_p[p]}, {"cos", cos_p[p]}}) +
                    "\n";
    }
    std::string sample_lines;
    for (size_t i = 0; i < rs.size(); ++i) {
      const auto& x = rs[i];
      sample_lines += dump(ordered_json{{"problem", eligible[static_cast<size_t>(x.slot)]}, {"sample", x.sample},
                                        {"correct", x.correct}, {"answer", x.answer},
                                        {"finish", rollout::finish_reason_name(x.finish)},
                                        {"phi_norm", norm_p[i]}, {"text", x.text}, {"ids", x.tokens}}) +
                      "\n";
    }
    write_atomic(out / "pairs.jsonl", pair_lines);
    write_atomic(out / "samples.jsonl", sample_lines);
    write_atomic(out / "geometry.json", dump(summary, 2) + "\n");
    config::save_yaml(cfg, out / "config.yaml");

    // The table.
    std::printf("g2rl-geometry: %lld problems x %lld responses, accuracy %s, Phi at T=%g; %lld pairs\n",
                static_cast<long long>(P), static_cast<long long>(k), fixed(accuracy).c_str(), feature_temperature,
                static_cast<long long>(pairs));
    std::printf("  %-20s %7s %9s %8s\n", "pairs", "count", "mean cos", "cos < 0");
    auto row = [](const char* name, const g2rl::PairStats& s) {
      std::printf("  %-20s %7lld %9s %8s\n", name, static_cast<long long>(s.pairs), fixed(s.mean_cos, 4).c_str(),
                  std::isfinite(s.neg_frac) ? (fixed(100 * s.neg_frac, 2) + "%").c_str() : "-");
    };
    row("all", stats.all);
    row("correct-correct", stats.correct_correct);
    row("mixed", stats.mixed);
    row("incorrect-incorrect", stats.incorrect_incorrect);
    std::printf("-> %s\n", (out / "geometry.json").string().c_str());
    std::string venv;
    if (const char* v = std::getenv("INTROSPECT_VENV"); v && *v) {
      venv = v;
    } else if (const char* c = std::getenv("INTROSPECT_CACHE"); c && *c) {
      venv = std::string(c) + "/venv";
    } else {
      venv = "~/.cache/introspect/venv";
    }
    std::printf("plot: %s/bin/python scripts/plot_g2rl_geometry.py %s\n", venv.c_str(), out.string().c_str());
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "introspect analyze g2rl-geometry: " << e.what() << "\n";
  }
  return 1;
}

int analyze_masa_gate(const AnalyzeMasaGateOptions& o) {
  try {
    auto cfg = analysis_config(o.config, o.overrides, o.model, o.data);
    if (o.problems < 0) throw std::invalid_argument("--problems must be >= 0 (0 means all)");
    if (cfg.rollout.n < 2) throw std::invalid_argument("rollout.n must be >= 2: zero variance needs a group");
    const auto& c = cfg.masa;
    log::init(cfg.log.level);
    core::init_torch(cfg.run.threads);
    const auto start = Clock::now();
    const auto dataset = io::Dataset::load(cfg.data.eval_path, io::dataset_options(cfg.data));
    if (dataset.skipped) log::warn(cfg.data.eval_path, ": skipped ", dataset.skipped, " malformed rows");

    // The solution prompt and the meta prompt (its own system prompt), as the trainer builds them.
    const auto tok = tokenizer::Tokenizer::load(cfg.model.path);
    const tokenizer::PromptFormatter format(cfg.data, *tok, cfg.model.path, o.chat_template);
    auto meta_data = cfg.data;
    meta_data.system_prompt = c.meta_system_prompt;
    const tokenizer::PromptFormatter meta_format(meta_data, *tok, cfg.model.path, o.chat_template);
    const int64_t limit = cfg.rollout.max_new_tokens;
    std::vector<std::vector<int32_t>> prompt_ids(dataset.problems.size()), meta_ids(dataset.problems.size());
    std::vector<int64_t> prompt_tokens(dataset.problems.size());
    for (size_t i = 0; i < dataset.problems.size(); ++i) {
      const auto& problem = dataset.problems[i].prompt;
      prompt_ids[i] = format.encode(problem);
      meta_ids[i] = meta_format.encode(masa::meta_user_message(c.meta_prompt, problem, c.min_solution_length, limit));
      prompt_tokens[i] = static_cast<int64_t>(std::max(prompt_ids[i].size(), meta_ids[i].size()));
    }
    const auto picked = pick_problems(prompt_tokens, cfg, o.problems, o.shuffle);
    const auto& eligible = picked.indices;  // (not a structured binding: lambdas below capture it)
    const int64_t too_long = picked.too_long;
    const int64_t P = static_cast<int64_t>(eligible.size()), M = c.meta_n, G = cfg.rollout.n;
    const fs::path out = o.out.empty() ? fs::path("runs/masa-gate") : fs::path(o.out);
    fs::create_directories(out);  // before the long generation, so an unwritable --out fails at once

    const auto model = model::CausalLM::load(cfg.model.path, cfg.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
    const rollout::Generator generator(model, cfg.rollout.max_batch, cfg.rollout.kv_budget_mb << 20, tok.get());
    // Meta and solution rollouts draw from different seeds (rollout.seed and rollout.seed + 1).
    auto params = rollout::sampling_params(cfg.rollout);
    std::vector<rollout::Prompt> meta_prompts, solution_prompts;
    for (int64_t i : eligible) {
      meta_prompts.push_back({meta_ids[static_cast<size_t>(i)], c.meta_max_new_tokens});
      solution_prompts.push_back({prompt_ids[static_cast<size_t>(i)], limit});
    }

    // 1. Meta rollouts and the gate.
    auto t0 = Clock::now();
    params.n = M;
    const auto meta_samples = sample_all(generator, meta_prompts, params, cfg, "meta");
    const double t_meta = seconds_since(t0);
    const auto parse = masa::parse_options(c, limit);
    std::vector<std::vector<masa::MetaPrediction>> predictions(static_cast<size_t>(P));
    std::vector<std::vector<std::string>> meta_texts(static_cast<size_t>(P));
    for (const auto& s : meta_samples) {
      meta_texts[static_cast<size_t>(s.prompt_index)].push_back(tok->decode(s.tokens, /*skip_special=*/true));
      predictions[static_cast<size_t>(s.prompt_index)].push_back(
          masa::parse_meta(meta_texts[static_cast<size_t>(s.prompt_index)].back(), parse));
    }
    const auto gate_options = masa::gate_options(c);
    std::vector<masa::GateDecision> decisions;
    for (const auto& p : predictions) decisions.push_back(masa::gate(p, gate_options));

    // 2. Solution rollouts at the full limit, graded: the truth.
    t0 = Clock::now();
    params.n = G;
    params.seed += 1;
    const auto solution_samples = sample_all(generator, solution_prompts, params, cfg, "solve");
    const double t_solve = seconds_since(t0);
    std::vector<uint8_t> verdicts(solution_samples.size(), 0);
    for_each_on_threads(solution_samples.size(), [&](size_t i) {
      const auto& s = solution_samples[i];
      const auto& gold = dataset.problems[static_cast<size_t>(eligible[static_cast<size_t>(s.prompt_index)])].answer;
      verdicts[i] = grade(tok->decode(s.tokens, /*skip_special=*/true), gold, cfg).correct;
    });
    std::vector<int64_t> n_correct(static_cast<size_t>(P), 0);
    for (size_t i = 0; i < solution_samples.size(); ++i)
      n_correct[static_cast<size_t>(solution_samples[i].prompt_index)] += verdicts[i];

    // 3. The gate against the truth.
    int64_t gated = 0, zero_var = 0, true_pos = 0, gated_solved = 0, true_pos_solved = 0, calibrated = 0;
    double abs_error = 0;
    std::string problem_lines;
    for (int64_t g = 0; g < P; ++g) {
      const auto& d = decisions[static_cast<size_t>(g)];
      const int64_t k = n_correct[static_cast<size_t>(g)];
      const bool zero = k == 0 || k == G;
      const double pass_rate = static_cast<double>(k) / static_cast<double>(G);
      gated += d.gated, zero_var += zero, true_pos += d.gated && zero;
      gated_solved += d.gated && d.predicted_solved, true_pos_solved += d.gated && d.predicted_solved && zero;
      if (d.valid > 0) abs_error += std::abs(d.mean - pass_rate), ++calibrated;
      ordered_json predicted = ordered_json::array();
      for (const auto& p : predictions[static_cast<size_t>(g)])
        predicted.push_back(p.pass_rate ? ordered_json(*p.pass_rate) : ordered_json(nullptr));
      problem_lines += dump(ordered_json{{"index", eligible[static_cast<size_t>(g)]},
                                         {"source", dataset.problems[static_cast<size_t>(eligible[static_cast<size_t>(g)])].source},
                                         {"predicted_pass_rates", predicted}, {"valid", d.valid},
                                         {"mean", d.valid ? ordered_json(d.mean) : ordered_json(nullptr)},
                                         {"std", d.valid ? ordered_json(d.std) : ordered_json(nullptr)},
                                         {"gated", d.gated},
                                         {"predicted_solved", d.predicted_solved}, {"correct", k}, {"n", G},
                                         {"zero_variance", zero}, {"meta_texts", meta_texts[static_cast<size_t>(g)]}}) +
                       "\n";
    }
    const auto ratio = [](int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : NAN; };
    const double precision = ratio(true_pos, gated), recall = ratio(true_pos, zero_var);
    const double f1 = std::isfinite(precision) && std::isfinite(recall) && precision + recall > 0
                          ? 2 * precision * recall / (precision + recall)
                          : NAN;
    const ordered_json summary{
        {"model", cfg.model.path},
        {"dataset", cfg.data.eval_path},
        {"problems", P},
        {"passed_over_long_prompts", too_long},
        {"selection", o.shuffle ? "shuffled" : "first"},
        {"gate", {{"rule", c.gate_rule}, {"sigma", c.gate_sigma}, {"min_valid_frac", c.gate_min_valid_frac},
                  {"out_of_range", c.gate_out_of_range}, {"meta_n", M}}},
        {"solutions_per_problem", G},
        {"gated", gated},
        {"gated_solved", gated_solved},
        {"gated_unsolvable", gated - gated_solved},
        {"zero_variance", zero_var},
        {"true_positives", true_pos},
        {"true_positives_solved", true_pos_solved},
        {"precision", number(precision)},
        {"recall", number(recall)},
        {"f1", number(f1)},
        {"base_rate", number(ratio(zero_var, P))},
        {"gated_frac", number(ratio(gated, P))},
        {"pass_rate_abs_error", number(calibrated ? abs_error / static_cast<double>(calibrated) : NAN)},
        {"problems_with_a_prediction", calibrated},
        {"seconds", {{"meta", t_meta}, {"solve", t_solve}, {"total", seconds_since(start)}}}};
    write_atomic(out / "problems.jsonl", problem_lines);
    write_atomic(out / "gate.json", dump(summary, 2) + "\n");
    config::save_yaml(cfg, out / "config.yaml");

    std::printf("masa-gate: %lld problems, %lld meta and %lld solution rollouts each; gate %s, sigma %g\n",
                static_cast<long long>(P), static_cast<long long>(M), static_cast<long long>(G), c.gate_rule.c_str(),
                c.gate_sigma);
    std::printf("  gated %lld (%lld predicted solved), zero-variance %lld, both %lld\n", static_cast<long long>(gated),
                static_cast<long long>(gated_solved), static_cast<long long>(zero_var), static_cast<long long>(true_pos));
    std::printf("  precision %s  recall %s  F1 %s  (base rate %s: the precision of gating every problem)\n",
                fixed(precision).c_str(), fixed(recall).c_str(), fixed(f1).c_str(), fixed(ratio(zero_var, P)).c_str());
    std::printf("-> %s\n", (out / "gate.json").string().c_str());
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "introspect analyze masa-gate: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace introspect::cli
