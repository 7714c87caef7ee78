// MASA in the training loop, on the MASA toy (demo.task=masa): a tiny model is warm-started on demonstrations
// whose meta JSON predicts pass rate 0 for the (unlearnable) "guess" prompts and 4 for the rest, so the gate has
// something to find. Checks the two paths' groups and metrics, gating against the truth, early cutoff, expert
// SFT, and the config combinations that are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "introspect/config/config.h"
#include "introspect/train/demo.h"
#include "introspect/train/trainer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using introspect::testing::read_jsonl;
using introspect::testing::ScratchDir;
using nlohmann::json;
namespace train = introspect::train;
namespace config = introspect::config;

namespace {

config::Config base_config(const fs::path& dir) {
  auto c = config::from_overrides({});
  c.run.threads = 2;
  c.log.progress = "off";
  c.data.chat_template = "custom";
  c.data.custom_chat_template = "{user}";
  c.data.max_prompt_tokens = 32;
  c.reward.math.extract = "boxed";
  c.data.train_path = (dir / "data" / "train.jsonl").string();
  return c;
}

class MasaTrain : public ::testing::Test {
 protected:
  // The warm start takes ~20 s and every test case is its own ctest process, so it is built once into the build
  // folder (write to a scratch folder, then rename; a DONE marker says it is complete) and reused. Bump the
  // suffix when the toy task or this warm start changes.
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir();
    warm_ = fs::path(INTROSPECT_BINARY).parent_path().parent_path() / "test_cache" / "masa_toy_v2";
    if (fs::exists(warm_ / "DONE")) return;
    ScratchDir build;
    const auto dir = build.path() / "warm";
    config::DemoConfig demo;
    demo.train_problems = 400;
    demo.heldout = 20;
    train::write_masa_task(dir / "data", demo, 5);
    // The meta demonstrations: pass rate 0 for guesses, 4 otherwise; length 7; one notion.
    std::ifstream in(dir / "data" / "sft.jsonl");
    std::ofstream out(dir / "data" / "sft_gate.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto row = json::parse(line);
      const std::string problem = row["problem"];
      if (problem.rfind("meta ", 0) == 0) {
        const json facts{{"math_notion", json::array({"digit reversal"})},
                         {"pass_rate", problem.rfind("meta guess", 0) == 0 ? 0 : 4},
                         {"solution_length", 7}};
        row["solution"] = "<meta></meta>" + facts.dump();
      }
      out << row.dump() << "\n";
    }
    out.close();
    train::write_demo_model(dir / "init", 5, train::masa_toy_tokens());
    auto sft = base_config(dir);
    sft.train.mode = "sft";
    sft.model.path = (dir / "init").string();
    sft.run.out_dir = (dir / "sft").string();
    sft.data.train_path = (dir / "data" / "sft_gate.jsonl").string();
    sft.train.total_steps = 200;
    sft.train.prompts_per_step = 64;
    sft.train.micro_batch_size = 64;
    sft.train.lr = 3e-3;
    sft.train.warmup_steps = 10;
    sft.train.weight_decay = 0;
    sft.train.save_every = 0;
    train::run(sft);
    std::ofstream(dir / "DONE") << "\n";
    fs::create_directories(warm_.parent_path());
    std::error_code ec;
    fs::rename(dir, warm_, ec);  // a concurrent test process may have won the race: its copy is as good
    ASSERT_TRUE(fs::exists(warm_ / "DONE")) << "cannot place the warm start at " << warm_ << ": " << ec.message();
  }
  static void TearDownTestSuite() { delete scratch_; }

  static config::Config masa_run(const std::string& name) {
    auto c = base_config(warm_);
    c.model.path = (warm_ / "sft" / "export").string();
    c.run.out_dir = (scratch_->path() / name).string();
    c.rollout.n = 4;
    c.rollout.max_new_tokens = 24;
    c.train.prompts_per_step = 8;
    c.train.mini_batch_size = 1024;
    c.train.micro_batch_size = 64;
    c.train.total_steps = 2;
    c.train.lr = 1e-4;
    c.train.save_every = 0;
    c.masa.enabled = true;
    c.masa.meta_n = 4;
    c.masa.meta_max_new_tokens = 40;
    c.masa.meta_system_prompt = "";
    c.masa.meta_prompt = "meta {problem}";
    c.masa.min_solution_length = 1;
    return c;
  }

  static ScratchDir* scratch_;
  static fs::path warm_;
};
ScratchDir* MasaTrain::scratch_ = nullptr;
fs::path MasaTrain::warm_;

TEST_F(MasaTrain, MetaAndSolutionRolloutsTrainTogetherWithTheirOwnMetrics) {
  const auto c = masa_run("plain");
  const auto r = train::run(c);
  ASSERT_EQ(r.steps_done, 2);
  const auto m = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(m.size(), 2u);
  for (const auto& s : m) {
    EXPECT_LT(s.at("reward/masa/parse_fail_rate").get<double>(), 0.25);  // the warm start taught the format
    EXPECT_GT(s.at("meta/response_length").get<double>(), 0);
    EXPECT_GT(s.at("solution/response_length").get<double>(), 0);
    const double share = s.at("masa/meta_token_share");
    EXPECT_GT(share, 0.0);
    EXPECT_LT(share, 1.0);
    EXPECT_EQ(s.at("masa/efficient").get<double>(), 0.0);
    EXPECT_FALSE(s.contains("masa/gated_frac"));  // no gating before the efficient phase
    EXPECT_GE(s.at("reward/masa/mean").get<double>(), 0.0);
    EXPECT_LE(s.at("reward/masa/mean").get<double>(), 1.0);
    EXPECT_TRUE(s.contains("meta/entropy") && s.contains("solution/entropy"));
    EXPECT_EQ(s.at("actor/updates").get<double>(), 1.0);  // one update over both paths
  }
}

// Phase 1 generates meta and solution rollouts in one call (spec 3.1: in parallel); the efficient phase
// generates the meta rollouts first. With a gate that never fires and no cutoff, both must draw the same
// rollouts, so every metric of the first step matches.
TEST_F(MasaTrain, ParallelPhaseOneDrawsWhatTheSequentialPipelineDraws) {
  auto parallel = masa_run("parallel");
  parallel.train.total_steps = 1;
  auto sequential = masa_run("sequential");
  sequential.train.total_steps = 1;
  sequential.masa.efficient = true;
  sequential.masa.efficient_start_step = 0;
  sequential.masa.gate_sigma = 0;  // std < 0 never holds: no prompt is gated
  sequential.masa.cutoff_scale = 0;
  train::run(parallel);
  train::run(sequential);
  const auto a = read_jsonl(fs::path(parallel.run.out_dir) / "metrics.jsonl").at(0);
  const auto b = read_jsonl(fs::path(sequential.run.out_dir) / "metrics.jsonl").at(0);
  EXPECT_FALSE(a.contains("time/meta_generate"));  // one call: the meta path has no time of its own
  EXPECT_TRUE(b.contains("time/meta_generate"));
  EXPECT_EQ(b.at("masa/gated").get<double>(), 0.0);
  for (const char* k : {"accuracy", "solution/response_length", "meta/response_length", "reward/masa/mean",
                        "reward/masa/parse_fail_rate", "masa/meta_token_share", "actor/pg_loss"}) {
    ASSERT_TRUE(a.contains(k) && b.contains(k)) << k;
    EXPECT_NEAR(a.at(k).get<double>(), b.at(k).get<double>(), 1e-6) << k;
  }
}

// Meta and solution rollouts differ in length. Padded to one micro-batch's longest, the update pays for the
// padding. train.micro_batch_tokens sorts by length and splits by padded tokens: less padding, same update.
TEST_F(MasaTrain, TokenBudgetCutsThePaddingAndKeepsTheUpdate) {
  auto padded = masa_run("padded");
  padded.train.total_steps = 1;
  auto budget = masa_run("budget");
  budget.train.total_steps = 1;
  budget.train.micro_batch_tokens = 256;
  train::run(padded);
  train::run(budget);
  const auto a = read_jsonl(fs::path(padded.run.out_dir) / "metrics.jsonl").at(0);
  const auto b = read_jsonl(fs::path(budget.run.out_dir) / "metrics.jsonl").at(0);
  EXPECT_EQ(a.at("actor/micro_batches").get<double>(), 1.0);
  EXPECT_GT(b.at("actor/micro_batches").get<double>(), 1.0);
  EXPECT_GT(a.at("actor/padding_frac").get<double>(), 0.2);
  EXPECT_LT(b.at("actor/padding_frac").get<double>(), 0.5 * a.at("actor/padding_frac").get<double>());
  for (const char* k : {"actor/pg_loss", "actor/grad_norm", "actor/entropy", "meta/entropy", "solution/entropy"})
    EXPECT_NEAR(a.at(k).get<double>(), b.at(k).get<double>(), 1e-5) << k;
}

TEST_F(MasaTrain, GatingSkipsConfidentPromptsAndTheAuditFindsThemZeroVariance) {
  auto c = masa_run("gate");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 0;
  c.masa.gate_audit_frac = 1.0;
  c.masa.cutoff_scale = 0;  // cutoff off: only the gate acts
  c.train.total_steps = 3;
  train::run(c);
  double gated = 0, audited = 0, audited_zero = 0, prompts = 0;
  for (const auto& s : read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl")) {
    EXPECT_EQ(s.at("masa/efficient").get<double>(), 1.0);
    EXPECT_EQ(s.at("masa/gated").get<double>() + s.at("masa/kept").get<double>(), 8.0);
    gated += s.at("masa/gated").get<double>();
    audited += s.at("masa/gate_audited").get<double>();
    audited_zero += s.at("masa/gate_audited_zero_var").get<double>();
    prompts += 8;
    EXPECT_EQ(s.at("masa/cutoff_budget_saved").get<double>(), 0.0);
    // The audited prompts' predictions against their audit: predicted about 0/8, solved 0 of 4 times.
    EXPECT_EQ(s.contains("masa/gate_audited_abs_pass_error"), s.at("masa/gate_audited").get<double>() > 0);
    // Without the gate check the audit only measures, so it is its own call, which masa_report.py leaves out of wall time.
    EXPECT_TRUE(s.contains("time/masa_audit"));
    if (s.contains("masa/gate_audited_abs_pass_error")) {
      EXPECT_LE(s.at("masa/gate_audited_abs_pass_error").get<double>(), 1.0 / 8);
    }
  }
  // About a fifth of the toy's prompts are guesses, predicted unsolvable; the rest predict 4/8 and are never gated.
  EXPECT_GT(gated, 0);
  EXPECT_LT(gated, prompts);
  EXPECT_EQ(audited, gated);       // gate_audit_frac = 1
  EXPECT_EQ(audited_zero, gated);  // every gated prompt really is zero-variance
}

// masa.gate_min_precision across a resume: a checkpoint whose "never solved" side was wrong in its 4 checked
// verdicts comes back with that side stopped. Its verdicts (the guesses) are then withheld: solved and trained,
// not gated. Every guess really is unsolvable, so each withheld one is a right verdict, and once 3 of the last 4
// are right (0.75) the side gates again.
TEST_F(MasaTrain, GateCheckStopsAWrongSideAndTheCheckpointKeepsIt) {
  auto c = masa_run("gate_check");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 0;
  c.masa.gate_audit_frac = 1.0;
  // A harsh cutoff (every kept prompt's cap is the floor, 4 tokens): withheld prompts are solved without it, at the
  // full limit, as audits are.
  c.masa.cutoff_scale = 0.01;
  c.masa.cutoff_min_tokens = 4;
  c.masa.gate_min_precision = 0.75;
  c.masa.gate_check_window = 4;
  c.train.total_steps = 1;
  c.train.save_every = 1;
  train::run(c);
  const auto metrics = fs::path(c.run.out_dir) / "metrics.jsonl";
  const auto first = read_jsonl(metrics).at(0);
  const double gated = first.at("masa/gated");
  ASSERT_GT(gated, 0);  // the warm start predicts 0/8 for guesses
  EXPECT_EQ(first.at("masa/gate_stopped_unsolved").get<double>(), 0.0);
  EXPECT_EQ(first.at("masa/gate_checked_precision_unsolved").get<double>(), 1.0);
  EXPECT_FALSE(first.contains("masa/gate_checked_precision_solved"));
  EXPECT_FALSE(first.contains("time/masa_audit"));  // the audit is part of training now, inside time/generate
  const auto state_path = fs::path(c.run.out_dir) / "checkpoints" / "step_1" / "state.json";
  auto state = json::parse(std::ifstream(state_path));
  EXPECT_EQ(state.at("masa_gate_check").at("unsolved"),
            json(std::vector<bool>(static_cast<size_t>(std::min(gated, 4.0)), true)));
  state["masa_gate_check"]["unsolved"] = {false, false, false, false};
  std::ofstream(state_path) << state.dump();

  c.train.total_steps = 8;
  train::RunOptions resume;
  resume.resume_auto = true;
  train::run(c, resume);
  const auto rows = read_jsonl(metrics);
  ASSERT_EQ(rows.size(), 8u);
  double withheld = 0;
  bool back = false;
  for (size_t i = 1; i < rows.size() && !back; ++i) {
    EXPECT_EQ(rows[i].at("masa/gate_stopped_solved").get<double>(), 0.0);
    back = rows[i].at("masa/gate_stopped_unsolved").get<double>() == 0.0;
    if (back) break;
    EXPECT_EQ(rows[i].at("masa/gated").get<double>(), 0.0) << "step " << i + 1;
    EXPECT_EQ(rows[i].at("masa/gate_audited").get<double>(), 0.0);
    const double w = rows[i].at("masa/gate_withheld").get<double>(), kept = rows[i].at("masa/kept").get<double>();
    EXPECT_GE(rows[i].at("masa/cutoff_mean").get<double>() * kept, 4 * (kept - w) + 24 * w) << "step " << i + 1;
    withheld += w;
  }
  EXPECT_GT(rows[1].at("masa/gate_withheld").get<double>() + rows[2].at("masa/gate_withheld").get<double>(), 0);
  EXPECT_TRUE(back);
  EXPECT_GE(withheld, 3);
  double gated_after = 0;  // back: it gates (and is audited) again
  for (size_t i = 1; i < rows.size(); ++i)
    if (rows[i].at("masa/gate_stopped_unsolved").get<double>() == 0.0) gated_after += rows[i].at("masa/gated").get<double>();
  EXPECT_GT(gated_after, 0);
}

// Under token-mean, gating a fraction f of the prompts would scale the step by about 1/(1-f): the gated groups,
// which GRPO would have trained with advantage 0, leave the denominator. masa.gated_loss_norm=counted keeps them
// there (their meta tokens and n solutions of their predicted length); kept divides by the trained tokens only.
// Both runs draw the same rollouts, so the loss and the gradient differ by exactly T / (T + absent).
TEST_F(MasaTrain, GatedPromptsStayInTheTokenMeanWhenCounted) {
  auto run = [&](const std::string& norm) {
    auto c = masa_run("norm_" + norm);
    c.train.total_steps = 1;
    c.masa.efficient = true;
    c.masa.efficient_start_step = 0;
    c.masa.cutoff_scale = 0;
    c.masa.gated_loss_norm = norm;
    train::run(c);
    return read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl").at(0);
  };
  const auto counted = run("counted"), kept = run("kept");
  const double gated = counted.at("masa/gated");
  ASSERT_GT(gated, 0);  // the warm start predicts 0/8 for guesses
  EXPECT_EQ(kept.at("masa/gated").get<double>(), gated);
  EXPECT_FALSE(kept.contains("masa/gated_absent_tokens"));
  const double absent = counted.at("masa/gated_absent_tokens");
  // Each gated prompt: 4 solutions of the predicted 7 tokens, plus its 4 meta rollouts.
  EXPECT_GE(absent, gated * (4 * 7 + 4));
  EXPECT_LE(absent, gated * 4 * (7 + 40));
  const double trained = kept.at("response_length/mean").get<double>() * kept.at("masa/kept").get<double>() * (4 + 4);
  const double ratio = trained / (trained + absent);
  for (const char* k : {"actor/pg_loss", "actor/grad_norm"}) {
    EXPECT_NEAR(counted.at(k).get<double>(), ratio * kept.at(k).get<double>(), 1e-4 * std::abs(kept.at(k).get<double>()))
        << k;
  }
  EXPECT_LT(ratio, 0.95);
}

// introspect analyze masa-gate on the warm start's unseen problems: every verdict and count is rebuilt here from
// the spec's rule (std_pop < σ and the mean rounds to 0 or 8 of 8, at least half the predictions valid) and the
// meta texts' JSON. The warm start predicts 0/8 for guesses (never solved) and 4/8 for the rest, so the gate must
// take exactly the guesses, all truly zero-variance.
TEST_F(MasaTrain, GateAnalysisOnUnseenProblemsMatchesTheSpecRuleAndTheTruth) {
  const auto c = masa_run("gate_cli");
  const fs::path dir = c.run.out_dir, config_file = dir / "config.yaml";
  fs::create_directories(dir);
  config::save_yaml(c, config_file);
  const auto heldout = warm_ / "data" / "heldout.jsonl";
  const auto r = introspect::testing::run_command(std::string(INTROSPECT_BINARY) + " analyze masa-gate --config " +
                                                  config_file.string() + " --data " + heldout.string() + " --out " +
                                                  (dir / "out").string() + " log.progress=off");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rows = read_jsonl(heldout);
  const auto problems = read_jsonl(dir / "out" / "problems.jsonl");
  ASSERT_EQ(problems.size(), rows.size());
  int64_t gated = 0, zero = 0, both = 0, guesses = 0;
  for (const auto& p : problems) {
    const auto& texts = p.at("meta_texts");
    const auto& listed = p.at("predicted_pass_rates");
    ASSERT_EQ(texts.size(), 4u);
    ASSERT_EQ(listed.size(), 4u);
    std::vector<double> valid;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i];
      const auto meta_end = text.rfind("</meta>");
      const auto json_start = text.find('{', meta_end == std::string::npos ? 0 : meta_end);
      const auto json_end = text.rfind('}');
      std::optional<double> rate;
      if (json_start != std::string::npos && json_end != std::string::npos && json_end > json_start) {
        const auto facts = json::parse(text.substr(json_start, json_end + 1 - json_start), nullptr,
                                       /*allow_exceptions=*/false);
        if (facts.is_object() && facts.contains("pass_rate") && facts["pass_rate"].is_number())
          rate = std::clamp(std::round(facts["pass_rate"].get<double>()), 0.0, 8.0) / 8.0;
      }
      ASSERT_EQ(listed[i].is_null(), !rate.has_value()) << text;
      if (rate) {
        EXPECT_DOUBLE_EQ(listed[i].get<double>(), *rate) << text;
        valid.push_back(*rate);
      }
    }
    double mean = 0, var = 0;
    for (double v : valid) mean += v / static_cast<double>(valid.size());
    for (double v : valid) var += (v - mean) * (v - mean) / static_cast<double>(valid.size());
    const bool rule = 2 * valid.size() >= texts.size() && std::sqrt(var) < 0.1 &&
                      (std::lround(8 * mean) == 0 || std::lround(8 * mean) == 8);
    EXPECT_EQ(p.at("gated").get<bool>(), rule) << p.dump();
    const int64_t correct = p.at("correct");
    EXPECT_EQ(p.at("n").get<int64_t>(), 4);
    EXPECT_EQ(p.at("zero_variance").get<bool>(), correct == 0 || correct == 4) << p.dump();
    const std::string problem = rows[p.at("index").get<size_t>()].at("problem");
    const bool guess = problem.rfind("guess", 0) == 0;
    guesses += guess;
    EXPECT_EQ(rule, guess) << problem << ": " << p.dump();
    gated += rule, zero += correct == 0 || correct == 4, both += rule && (correct == 0 || correct == 4);
  }
  ASSERT_GT(guesses, 0);
  ASSERT_LT(guesses, static_cast<int64_t>(problems.size()));
  const auto summary = json::parse(std::ifstream(dir / "out" / "gate.json"));
  EXPECT_EQ(summary.at("problems").get<int64_t>(), static_cast<int64_t>(problems.size()));
  EXPECT_EQ(summary.at("gated").get<int64_t>(), gated);
  EXPECT_EQ(summary.at("zero_variance").get<int64_t>(), zero);
  EXPECT_EQ(summary.at("true_positives").get<int64_t>(), both);
  EXPECT_EQ(both, gated);  // guesses are never solved
  EXPECT_DOUBLE_EQ(summary.at("precision").get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(summary.at("recall").get<double>(), static_cast<double>(both) / static_cast<double>(zero));
  EXPECT_DOUBLE_EQ(summary.at("base_rate").get<double>(),
                   static_cast<double>(zero) / static_cast<double>(problems.size()));
}

TEST_F(MasaTrain, EarlyCutoffCapsEachPromptsSolutions) {
  auto c = masa_run("cutoff");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 1;  // step 1 plain MASA, step 2 efficient
  c.masa.gate_sigma = 0;            // gating off: only the cutoff acts
  c.masa.cutoff_scale = 0.3;        // 0.3 x the predicted 7 tokens -> 3
  c.masa.cutoff_min_tokens = 2;
  train::run(c);
  const auto m = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_FALSE(m[0].contains("masa/cutoff_mean"));
  const auto& s = m[1];
  EXPECT_EQ(s.at("masa/gated").get<double>(), 0.0);
  EXPECT_LE(s.at("masa/cutoff_mean").get<double>(), 3.0);
  EXPECT_GE(s.at("masa/cutoff_mean").get<double>(), 2.0);
  EXPECT_LE(s.at("solution/response_length").get<double>(), s.at("masa/cutoff_mean").get<double>());
  EXPECT_GT(s.at("masa/cutoff_truncated_frac").get<double>(), 0.5);  // answers need more than 3 tokens
  EXPECT_GT(s.at("masa/cutoff_budget_saved").get<double>(), 8 * 4 * (24 - 3) / 2);
}

// masa.cutoff_guard_max_over_cap: caps of 3 tokens (answers need more) leave most rollouts past their cap, so after
// the plain MASA step the guard holds the cutoff back. A checkpoint keeps the share it acts on: resumed from step 1
// it holds again; told instead that step 1 ran within its caps, it cuts at step 2, sees most rollouts stopped, and
// holds the cutoff at step 3.
TEST_F(MasaTrain, CutoffGuardHoldsTheCutoffWhileRolloutsRunPastTheirCaps) {
  auto c = masa_run("cutoff_guard");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 1;
  c.masa.gate_sigma = 0;
  c.masa.cutoff_scale = 0.3;
  c.masa.cutoff_min_tokens = 2;
  c.masa.cutoff_guard_max_over_cap = 0.5;
  c.train.total_steps = 2;
  c.train.save_every = 1;
  train::run(c);
  const auto metrics = fs::path(c.run.out_dir) / "metrics.jsonl";
  auto m = read_jsonl(metrics);
  ASSERT_EQ(m.size(), 2u);
  const double first_over = m[0].at("masa/cutoff_over_cap_frac");
  EXPECT_GT(first_over, 0.5);
  EXPECT_FALSE(m[0].contains("masa/cutoff_held"));
  const auto held_at_step_2 = [&] {
    EXPECT_EQ(m[1].at("masa/cutoff_held").get<double>(), 1.0);
    EXPECT_EQ(m[1].at("masa/cutoff_truncated_frac").get<double>(), 0.0);
    EXPECT_EQ(m[1].at("masa/cutoff_mean").get<double>(), 24.0);  // the full limit
    EXPECT_GT(m[1].at("masa/cutoff_over_cap_frac").get<double>(), 0.5);
  };
  held_at_step_2();

  const auto checkpoints = fs::path(c.run.out_dir) / "checkpoints";
  const auto state_path = checkpoints / "step_1" / "state.json";
  auto state = json::parse(std::ifstream(state_path));
  EXPECT_EQ(state.at("masa_cutoff_over_cap").get<double>(), first_over);
  train::RunOptions resume;
  resume.resume_auto = true;
  fs::remove_all(checkpoints / "step_2");
  train::run(c, resume);
  m = read_jsonl(metrics);
  ASSERT_EQ(m.size(), 2u);
  held_at_step_2();

  state["masa_cutoff_over_cap"] = 0.0;
  std::ofstream(state_path) << state.dump();
  fs::remove_all(checkpoints / "step_2");
  c.train.total_steps = 3;
  train::run(c, resume);
  m = read_jsonl(metrics);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].at("masa/cutoff_held").get<double>(), 0.0);
  EXPECT_LE(m[1].at("masa/cutoff_mean").get<double>(), 3.0);
  const double cut = m[1].at("masa/cutoff_truncated_frac");
  EXPECT_GT(cut, 0.5);
  EXPECT_EQ(m[1].at("masa/cutoff_over_cap_frac").get<double>(), cut);  // every rollout past its cap was stopped
  EXPECT_EQ(m[2].at("masa/cutoff_held").get<double>(), 1.0);

  // With the cutoff turned off there is nothing to hold, whatever the checkpoint says.
  state["masa_cutoff_over_cap"] = 1.0;
  std::ofstream(state_path) << state.dump();
  fs::remove_all(checkpoints / "step_2"), fs::remove_all(checkpoints / "step_3");
  c.masa.cutoff_scale = 0;
  c.train.total_steps = 2;
  train::run(c, resume);
  m = read_jsonl(metrics);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[1].at("masa/cutoff_held").get<double>(), 0.0);
  EXPECT_FALSE(m[1].contains("masa/cutoff_over_cap_frac"));
}

TEST_F(MasaTrain, NotionFeedInHintsTheSolutionPrompts) {
  auto c = masa_run("feed_in");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 0;
  c.masa.gate_sigma = 0;
  c.masa.notion_feed_in = true;
  c.train.total_steps = 1;
  train::run(c);
  const auto m = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_GT(m[0].at("masa/notion_hints").get<double>(), 4.0);  // of 8 prompts; the warm start names a notion
  c.masa.notion_feed_in = false;
  c.run.out_dir += "_off";
  train::run(c);
  EXPECT_FALSE(read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl")[0].contains("masa/notion_hints"));
}

TEST_F(MasaTrain, ExpertSftRunsWhenTheBufferFills) {
  auto c = masa_run("expert");
  c.masa.expert_sft.enabled = true;
  c.masa.expert_sft.buffer_size = 2;
  c.masa.expert_sft.min_notion_score = 0;  // the toy's notion never appears in an answer: score 0
  c.masa.expert_sft.lr = 1e-4;
  c.train.total_steps = 3;
  train::run(c);
  int sft_steps = 0;
  for (const auto& s : read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl")) {
    if (!s.contains("masa/expert_sft_loss")) continue;
    ++sft_steps;
    const double loss = s.at("masa/expert_sft_loss");
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_GT(loss, 0.0);
  }
  EXPECT_GT(sft_steps, 0);  // some prompt had a correct solution, so a corrected target
}

// A prompt with no correct solution still has a true pass rate, 0: masa.expert_sft.unsolved=zero targets it,
// skip leaves it out, so the expert data never says "unsolvable". The toy's guesses are never solved, and its
// notions never score, so the default notion threshold (0.2) leaves only unsolved prompts, which zero exempts.
// An unsolved prompt whose rollouts the early cutoff stopped is no evidence of pass rate 0: never a target.
TEST_F(MasaTrain, ExpertSftTargetsUnsolvedPromptsWithPassRateZero) {
  auto run = [&](const std::string& unsolved, double min_notion_score, bool tight_cutoff) {
    auto c = masa_run("unsolved_" + unsolved + std::to_string(min_notion_score) + (tight_cutoff ? "_cut" : ""));
    c.masa.expert_sft.enabled = true;
    c.masa.expert_sft.buffer_size = 1000;  // never fills: the buffer counts the targets
    c.masa.expert_sft.min_notion_score = min_notion_score;
    c.masa.expert_sft.unsolved = unsolved;
    if (tight_cutoff) {
      c.masa.efficient = true;
      c.masa.efficient_start_step = 0;
      c.masa.gate_sigma = 0;  // nothing gated: every prompt is solved under its cutoff
      c.masa.cutoff_scale = 0.01;
      c.masa.cutoff_min_tokens = 1;
    }
    c.train.total_steps = 1;
    train::run(c);
    const auto s = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl").at(0);
    return std::make_pair(s.at("masa/expert_buffer").get<double>(), s.at("accuracy").get<double>());
  };
  const auto [zero, accuracy] = run("zero", 0, false);
  const auto [skip, same_accuracy] = run("skip", 0, false);
  EXPECT_EQ(accuracy, same_accuracy);  // the same rollouts
  EXPECT_LE(zero, 8.0);                // at most one target per prompt of the step
  EXPECT_GT(skip, 0.0);
  EXPECT_LT(skip, zero);
  const auto unsolved_only = run("zero", 0.2, false).first;
  EXPECT_EQ(run("skip", 0.2, false).first, 0.0);
  EXPECT_GT(unsolved_only, 0.0);
  EXPECT_EQ(unsolved_only, zero - skip);
  EXPECT_EQ(run("zero", 0.2, true).first, 0.0);
}

TEST_F(MasaTrain, RefusedCombinationsNameTheKeys) {
  auto c = masa_run("refused");
  c.g2rl.enabled = true;
  try {
    train::run(c);
    FAIL() << "masa with g2rl should be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("g2rl.enabled"), std::string::npos) << e.what();
  }
  c.g2rl.enabled = false;
  c.reward.modules = {"format"};
  try {
    train::run(c);
    FAIL() << "masa without the math module should be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("reward.modules"), std::string::npos) << e.what();
  }
  c.reward.modules = {"math"};
  c.masa.efficient = true;
  c.masa.gate_min_precision = 0.8;  // without audits
  try {
    train::run(c);
    FAIL() << "a gate check without audits should be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("masa.gate_min_precision"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("masa.gate_audit_frac"), std::string::npos) << e.what();
  }
}

}  // namespace

TEST_F(MasaTrain, TwoRanksMatchOneProcess) {
  // MASA-efficient with everything on (gating with audits, cutoff, notion feed-in, expert SFT, several PPO updates)
  // on 2 MPI ranks with ZeRO-1 against one process: the same rollouts, gate verdicts and weights.
  auto c = masa_run("dp_single");
  c.masa.efficient = true;
  c.masa.efficient_start_step = 1;
  c.masa.gate_audit_frac = 0.75;
  c.masa.gate_min_precision = 0.9;
  c.masa.gate_check_window = 4;
  c.masa.cutoff_scale = 2.0;
  c.masa.cutoff_min_tokens = 4;
  c.masa.cutoff_guard_max_over_cap = 0;  // any rollout past its cap holds the next step's cutoff
  c.masa.notion_feed_in = true;
  c.masa.expert_sft.enabled = true;
  c.masa.expert_sft.buffer_size = 2;
  c.masa.expert_sft.min_notion_score = 0;
  c.train.total_steps = 3;
  c.train.mini_batch_size = 24;
  c.train.micro_batch_size = 8;
  c.train.lr = 5e-4;
  c.run.threads = 1;
  train::run(c);
  config::save_yaml(c, scratch_->path() / "dp.yaml");
  const auto two = scratch_->path() / "dp_np2";
  const auto r = introspect::testing::run_command(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --bind-to none --oversubscribe -np 2 " +
      std::string(INTROSPECT_BINARY) + " train --config " + (scratch_->path() / "dp.yaml").string() + " --out " +
      two.string() + " dist.zero_stage=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto a = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl"), b = read_jsonl(two / "metrics.jsonl");
  ASSERT_EQ(a.size(), b.size());
  bool expert_step = false;
  for (size_t i = 0; i < a.size(); ++i) {
    for (const char* k : {"accuracy", "solution/response_length", "meta/response_length", "masa/gated",
                          "masa/gate_audited", "masa/kept_zero_var", "masa/cutoff_budget_saved", "masa/notion_hints",
                          "masa/gate_withheld", "masa/gate_checked_precision_unsolved",
                          "masa/gate_audited_abs_pass_error", "masa/expert_buffer", "masa/cutoff_over_cap_frac",
                          "masa/cutoff_held", "reward/mean"})
      if (a[i].contains(k)) {
        EXPECT_NEAR(a[i][k].get<double>(), b[i].at(k).get<double>(), 1e-9) << k << " step " << i + 1;
      }
    expert_step = expert_step || a[i].contains("masa/expert_sft_loss");
  }
  EXPECT_TRUE(expert_step);  // the expert SFT step ran, on both
  EXPECT_EQ(a[1].at("masa/cutoff_held").get<double>(), 1.0);  // the cutoff guard acted, on both
  EXPECT_TRUE(std::any_of(a.begin(), a.end(), [](const json& r) {
    return r.contains("masa/gate_checked_precision_unsolved");  // the gate's verdicts were checked
  }));
  EXPECT_GT(a.back().at("masa/gated").get<double>() + a[1].at("masa/gated").get<double>(), 0);
  const auto exported = fs::path(c.run.out_dir) / "export" / "model.safetensors";
  const auto d = introspect::testing::weight_difference(exported, two / "export" / "model.safetensors");
  const double diff = d.max_abs;
  const double moved = introspect::testing::weight_difference(exported, warm_ / "sft" / "export" / "model.safetensors").max_abs;
  EXPECT_GT(d.tensors, 5u);
  std::printf("MASA, 2 ranks vs 1: max weight difference %.3g (training moved them by up to %.3g)\n", diff, moved);
  // The trained warm start leaves many gradient elements near zero, where the other summation order is a relative
  // change that AdamW's normalisation turns into a fraction of lr (measured up to 6.8e-5 = 0.14 lr on isolated
  // elements; 2e-7 on the untrained model of test_dist_train). Wrong groups or normalisers would differ by lr or
  // more everywhere, and would already have changed the rollouts compared above.
  EXPECT_LT(diff, 0.5 * c.train.lr);
  EXPECT_GT(moved, 4 * c.train.lr);
}
