// introspect eval end to end: a demo model trained for a few seconds is evaluated on the digit-reversal held-out
// set, and the summary in results.json is recomputed from problems.jsonl (pass@1, unbiased pass@k by the closed
// form, maj@k by a brute-force vote); on the untrained demo model: defaults, determinism, field mapping, skipped
// prompts, and clear errors for bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "introspect/config/schema.h"
#include "introspect/reward/eval_metrics.h"
#include "introspect/train/demo.h"
#include "test_util.h"

namespace fs = std::filesystem;
using introspect::testing::read_file;
using introspect::testing::run_command;
using introspect::testing::read_jsonl;
using introspect::testing::ScratchDir;
using nlohmann::json;

namespace {

// The demo's prompt format and answer extraction, and short responses.
const std::string kTaskArgs =
    " data.chat_template=custom 'data.custom_chat_template=\"{user}\"' reward.math.extract=boxed"
    " rollout.max_new_tokens=16 log.progress=off";

std::string bin() { return INTROSPECT_BINARY; }

// C(a, b) exactly for the small numbers used here.
double choose(int64_t a, int64_t b) {
  if (b < 0 || b > a) return 0;
  double r = 1;
  for (int64_t i = 1; i <= b; ++i) r = r * static_cast<double>(a - b + i) / static_cast<double>(i);
  return r;
}

// The demo's untrained model and task files (instant to write): for the checks that need no accuracy.
class EvalCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDir>();
    introspect::config::DemoConfig demo;
    demo.heldout = 12;
    demo.train_problems = 5;
    introspect::train::write_demo_task(scratch_->path() / "data", demo, 3);
    introspect::train::write_demo_model(scratch_->path() / "model", 3);
    model_ = scratch_->path() / "model";
    heldout_ = scratch_->path() / "data" / "heldout.jsonl";
  }
  static void TearDownTestSuite() { scratch_.reset(); }

  static std::unique_ptr<ScratchDir> scratch_;
  static fs::path model_, heldout_;
};
std::unique_ptr<ScratchDir> EvalCli::scratch_;
fs::path EvalCli::model_, EvalCli::heldout_;

}  // namespace

// A model trained briefly by the demo (SFT warm start, two GRPO steps), evaluated on the demo's held-out set.
TEST(EvalCliTrained, SummaryMatchesPerProblemRecords) {
  ScratchDir dir;
  const auto run = dir.path() / "run";
  const auto trained = run_command(bin() + " train --out " + run.string() +
                                   " demo.sft_steps=150 demo.grpo_steps=2 log.progress=off");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const fs::path model = run / "grpo" / "export", heldout = run / "data" / "heldout.jsonl";
  ASSERT_TRUE(fs::exists(model / "config.json")) << trained.output;
  ASSERT_TRUE(fs::exists(heldout));
  const auto out = dir.path() / "eval";
  const int64_t n = 8;
  const auto r = run_command(bin() + " eval --model " + model.string() + " --data " + heldout.string() +
                             " --n 8 --k 1,2,4,8 --out " + out.string() + kTaskArgs);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval: 100 problems x 8 samples: pass@1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" maj@8 "), std::string::npos) << r.output;

  ASSERT_TRUE(fs::exists(out / "results.json"));
  ASSERT_TRUE(fs::exists(out / "problems.jsonl"));
  EXPECT_TRUE(fs::exists(out / "config.yaml"));
  for (const auto& entry : fs::directory_iterator(out))
    EXPECT_NE(entry.path().extension(), ".tmp") << "temporary file left behind: " << entry.path();

  const json res = json::parse(read_file(out / "results.json"));
  EXPECT_EQ(res["n"], n);
  EXPECT_EQ(res["ks"], json({1, 2, 4, 8}));
  EXPECT_EQ(res["problems"], 100);
  EXPECT_EQ(res["skipped"], 0);
  EXPECT_EQ(res["samples"], 800);
  EXPECT_EQ(res["model"], model.string());
  EXPECT_EQ(res["dataset"], heldout.string());
  EXPECT_EQ(res["extract"], "boxed");
  EXPECT_EQ(res["sampling"]["max_new_tokens"], 16);
  EXPECT_GT(res["mean_response_tokens"].get<double>(), 0);
  EXPECT_GT(res["seconds"].get<double>(), 0);
  const uint64_t seed = res["sampling"]["seed"].get<uint64_t>();

  const auto rows = read_jsonl(out / "problems.jsonl");
  ASSERT_EQ(rows.size(), 100u);
  double pass1 = 0;
  std::map<int64_t, double> pass_k, maj_k;
  int64_t clear_majorities = 0, tokens = 0;
  const std::vector<int64_t> ks{1, 2, 4, 8};
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    EXPECT_EQ(row["index"], static_cast<int64_t>(i));
    EXPECT_EQ(row["source"], heldout.string() + ":" + std::to_string(i + 1));
    EXPECT_EQ(row["prompt"].get<std::string>().rfind("reverse ", 0), 0u) << row.dump();
    const std::string number = row["prompt"].get<std::string>().substr(8);
    EXPECT_EQ(row["gold"], std::string(number.rbegin(), number.rend()));
    EXPECT_FALSE(row["skipped"].get<bool>());
    ASSERT_EQ(row["samples"].size(), static_cast<size_t>(n));
    std::vector<std::string> answers;
    std::vector<bool> correct;
    int64_t c = 0;
    for (const auto& s : row["samples"]) {
      answers.push_back(s["answer"]);
      correct.push_back(s["correct"]);
      c += s["correct"].get<bool>();
      tokens += s["tokens"].get<int64_t>();
      EXPECT_TRUE(s["response"].is_string());
      // Digit reversal has one spelling of each answer: correct exactly when it equals the gold.
      EXPECT_EQ(s["correct"].get<bool>(), s["answer"] == row["gold"]) << s.dump();
    }
    EXPECT_EQ(row["correct"], c);
    EXPECT_DOUBLE_EQ(row["pass@1"].get<double>(), static_cast<double>(c) / n);
    pass1 += static_cast<double>(c) / n;
    for (int64_t k : ks) {
      pass_k[k] += 1.0 - choose(n - c, k) / choose(n, k);
      // Brute-force vote over the first k answers (empty = no answer, never voted for).
      std::map<std::string, int64_t> votes;
      for (int64_t j = 0; j < k; ++j)
        if (!answers[j].empty()) ++votes[answers[j]];
      int64_t best = 0, at_best = 0;
      std::string winner;
      for (const auto& [a, v] : votes) {
        if (v > best) best = v, at_best = 0, winner = a;
        if (v == best) ++at_best;
      }
      const bool library = introspect::reward::majority_correct(answers, correct, k, seed + i);
      if (votes.empty()) {
        EXPECT_FALSE(library);
      } else if (at_best == 1) {
        ++clear_majorities;
        EXPECT_EQ(library, winner == row["gold"]) << row.dump();
      }
      maj_k[k] += library ? 1.0 : 0.0;
    }
  }
  EXPECT_GT(clear_majorities, 100);
  pass1 /= 100;
  EXPECT_NEAR(res["pass@1"].get<double>(), pass1, 1e-12);
  EXPECT_NEAR(res["mean_response_tokens"].get<double>(), static_cast<double>(tokens) / 800, 1e-9);
  double previous = 0;
  for (int64_t k : ks) {
    const auto key = std::to_string(k);
    const double pk = res["pass@k"][key].get<double>(), mk = res["maj@k"][key].get<double>();
    EXPECT_NEAR(pk, pass_k[k] / 100, 1e-9) << "pass@" << k;
    EXPECT_NEAR(mk, maj_k[k] / 100, 1e-12) << "maj@" << k;
    EXPECT_GE(mk, 0.0);
    EXPECT_LE(mk, 1.0);
    EXPECT_GE(pk, previous - 1e-12) << "pass@k must not fall as k grows";
    previous = pk;
  }
  EXPECT_NEAR(res["pass@k"]["1"].get<double>(), pass1, 1e-12);
  // The briefly trained demo model gets some right (an untrained one gets ~0), so the checks above are not
  // about zeros only.
  EXPECT_GT(pass1, 0.02) << r.output;
  EXPECT_GT(res["pass@k"]["8"].get<double>(), 0.1) << r.output;
  EXPECT_LT(pass1, 1.0 + 1e-12);
}

TEST_F(EvalCli, SameSeedSameSamplesAndDefaultN) {
  // No --n and no config: one sample per problem, k = 1 only.
  const auto a = scratch_->path() / "a", b = scratch_->path() / "b";
  for (const auto& out : {a, b}) {
    const auto r = run_command(bin() + " eval --model " + model_.string() + " --data " + heldout_.string() +
                               " --limit 10 --out " + out.string() + kTaskArgs + " rollout.seed=7");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const json res = json::parse(read_file(a / "results.json"));
  EXPECT_EQ(res["n"], 1);
  EXPECT_EQ(res["ks"], json({1}));
  EXPECT_EQ(res["problems"], 10);
  EXPECT_EQ(read_jsonl(a / "problems.jsonl").size(), 10u);
  EXPECT_GE(res["pass@1"].get<double>(), 0.0);
  EXPECT_LE(res["pass@1"].get<double>(), 1.0);
  EXPECT_EQ(res["sampling"]["seed"], 7);
  EXPECT_EQ(read_file(a / "problems.jsonl"), read_file(b / "problems.jsonl"));
  // rollout.n as an override is the default for n, and k defaults to powers of two up to n, and n.
  const auto c = scratch_->path() / "c";
  const auto r = run_command(bin() + " eval --model " + model_.string() + " --data " + heldout_.string() +
                             " --limit 3 --out " + c.string() + kTaskArgs + " rollout.n=6");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json res_c = json::parse(read_file(c / "results.json"));
  EXPECT_EQ(res_c["n"], 6);
  EXPECT_EQ(res_c["ks"], json({1, 2, 4, 6}));
}

TEST_F(EvalCli, ConfigFileMapsFieldsAndSkipsLongPrompts) {
  // A dataset with other field names, mapped by a config; one prompt is too long and is skipped and counted.
  const auto data = scratch_->write("renamed.jsonl",
                                    "{\"q\": \"reverse 123\", \"sol\": \"\\\\boxed{321}\"}\n"
                                    "{\"q\": \"reverse 1234567891234567891234567891234\", \"sol\": \"\\\\boxed{1}\"}\n"
                                    "{\"q\": \"reverse 45\", \"sol\": \"\\\\boxed{54}\"}\n");
  const auto cfg = scratch_->write("eval.yaml",
                                   "data:\n  prompt_field: q\n  answer_field: sol\n  answer_extract: boxed\n"
                                   "  chat_template: custom\n  custom_chat_template: \"{user}\"\n"
                                   "  max_prompt_tokens: 20\nrollout:\n  n: 4\n  max_new_tokens: 16\n"
                                   "reward:\n  math:\n    extract: boxed\nlog:\n  progress: off\n");
  const auto out = scratch_->path() / "mapped";
  const auto r = run_command(bin() + " eval --config " + cfg.string() + " --model " + model_.string() + " --data " +
                             data.string() + " --k 2 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval: 2 problems x 4 samples (1 skipped)"), std::string::npos) << r.output;
  const json res = json::parse(read_file(out / "results.json"));
  EXPECT_EQ(res["n"], 4);
  EXPECT_EQ(res["skipped"], 1);
  EXPECT_EQ(res["problems"], 2);
  const auto rows = read_jsonl(out / "problems.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["gold"], "321");
  EXPECT_TRUE(rows[1]["skipped"].get<bool>());
  EXPECT_TRUE(rows[1]["pass@1"].is_null());
  EXPECT_TRUE(rows[1]["samples"].empty());
  EXPECT_EQ(rows[2]["gold"], "54");
  EXPECT_NEAR(res["pass@1"].get<double>(),
              (rows[0]["pass@1"].get<double>() + rows[2]["pass@1"].get<double>()) / 2, 1e-12);
}

TEST_F(EvalCli, BadInputGivesClearErrors) {
  const std::string base = bin() + " eval --model " + model_.string() + " --out " + (scratch_->path() / "bad").string();
  // k larger than n.
  auto r = run_command(base + " --data " + heldout_.string() + " --n 2 --k 1,4" + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--k 4 is larger than n = 2"), std::string::npos) << r.output;
  // A malformed k list.
  r = run_command(base + " --data " + heldout_.string() + " --n 2 --k 1,x" + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'x' is not a positive integer"), std::string::npos) << r.output;
  // A missing dataset is named.
  const auto missing = scratch_->path() / "no-such-set.jsonl";
  r = run_command(base + " --data " + missing.string() + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(missing.string() + ": no such dataset file"), std::string::npos) << r.output;
  // No dataset at all.
  r = run_command(base + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no dataset: give --data FILE"), std::string::npos) << r.output;
  // A missing model folder is named.
  const auto no_model = scratch_->path() / "no-such-model";
  r = run_command(bin() + " eval --model " + no_model.string() + " --data " + heldout_.string() + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(no_model.string() + ": no such model folder"), std::string::npos) << r.output;
  // A malformed dataset row names its line.
  const auto broken = scratch_->write("broken.jsonl", "{\"problem\": \"reverse 12\", \"answer\": \"21\"}\n{oops\n");
  r = run_command(base + " --data " + broken.string() + kTaskArgs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(broken.string() + ":2"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(scratch_->path() / "bad" / "results.json"));
}
