// introspect analyze g2rl-geometry end to end on the demo's tiny model and digit-reversal task: geometry.json is
// recomputed from pairs.jsonl and samples.jsonl (pair counts, split counts, means, negative fractions, histograms,
// per-problem correct counts), and the command's Φ features are checked against autograd's hidden-state gradient
// (Φ = T · mean_t ∂ log p(y_t) / ∂ h_t), which pins the prompt/response alignment. Plus bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "introspect/config/config.h"
#include "introspect/config/schema.h"
#include "introspect/io/dataset.h"
#include "introspect/model/decoder.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"
#include "introspect/train/demo.h"
#include "test_util.h"

namespace fs = std::filesystem;
using introspect::testing::read_file;
using introspect::testing::run_command;
using introspect::testing::read_jsonl;
using introspect::testing::ScratchDir;
using nlohmann::json;

namespace {

const double kTemperature = 0.8;
// The demo's prompt format, fields and answer extraction (for the shell, and for config::from_overrides).
const std::vector<std::string> kTask{"data.chat_template=custom", "data.custom_chat_template=\"{user}\"",
                                     "reward.math.extract=boxed",  "data.prompt_field=problem",
                                     "data.answer_field=answer",   "rollout.temperature=0.8",
                                     "rollout.max_new_tokens=12",  "log.progress=off"};

std::string shell_args() {
  std::string s;
  for (const auto& a : kTask) s += " '" + a + "'";
  return s;
}

std::string bin() { return INTROSPECT_BINARY; }

double stat(const json& v) { return v.is_null() ? NAN : v.get<double>(); }

// Φ of one response by autograd, independent of the chunked pass: T · mean_t ∂ log p(y_t) / ∂ h_t, where h_t is
// the final hidden state at position p - 1 + t of prompt + response.
at::Tensor autograd_phi(const introspect::model::CausalLM& m, const std::vector<int32_t>& prompt,
                        const std::vector<int32_t>& response, double temperature) {
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), response.begin(), response.end());
  const int64_t L = static_cast<int64_t>(ids.size()), p = static_cast<int64_t>(prompt.size());
  const int64_t n = static_cast<int64_t>(response.size());
  at::Tensor hidden;
  {
    torch::NoGradGuard no_grad;
    hidden = m.forward_padded(torch::tensor(ids).view({1, L}), torch::ones({1, L}, torch::kLong), false).hidden[0];
  }
  auto h = hidden.narrow(0, p - 1, n).detach().to(torch::kDouble).requires_grad_(true);
  const auto w = m.lm_head_weight().detach().to(torch::kDouble);
  const auto logp = torch::log_softmax(torch::matmul(h, w.t()) / temperature, -1);
  const auto targets = torch::tensor(std::vector<int64_t>(response.begin(), response.end())).unsqueeze(1);
  logp.gather(1, targets).sum().backward();
  return h.grad().mean(0) * temperature;
}

class G2rlGeometryCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDir>();
    introspect::config::DemoConfig demo;
    demo.heldout = 6;
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
std::unique_ptr<ScratchDir> G2rlGeometryCli::scratch_;
fs::path G2rlGeometryCli::model_, G2rlGeometryCli::heldout_;

// Checks geometry.json against pairs.jsonl and samples.jsonl; returns the parsed summary.
json check_outputs(const fs::path& out, int64_t problems, int64_t k) {
  const int64_t pairs_per_problem = k * (k - 1) / 2, pairs = problems * pairs_per_problem;
  EXPECT_TRUE(fs::exists(out / "config.yaml"));
  for (const auto& entry : fs::directory_iterator(out))
    EXPECT_NE(entry.path().extension(), ".tmp") << "temporary file left behind: " << entry.path();
  const json g = json::parse(read_file(out / "geometry.json"));
  EXPECT_EQ(g["problems"], problems);
  EXPECT_EQ(g["k"], k);
  EXPECT_EQ(g["responses"], problems * k);
  EXPECT_EQ(g["pairs"], pairs);
  EXPECT_EQ(g["expected_pairs"], pairs);
  EXPECT_EQ(g["sampling"]["n"], k);
  EXPECT_DOUBLE_EQ(g["sampling"]["temperature"].get<double>(), kTemperature);
  EXPECT_DOUBLE_EQ(g["features"]["temperature"].get<double>(), kTemperature);
  EXPECT_EQ(g["extract"], "boxed");

  const auto& st = g["stats"];
  EXPECT_EQ(st["all"]["pairs"], pairs);
  EXPECT_EQ(st["correct_correct"]["pairs"].get<int64_t>() + st["mixed"]["pairs"].get<int64_t>() +
                st["incorrect_incorrect"]["pairs"].get<int64_t>(),
            pairs);

  // Histograms: edges over [-1, 1]; per-kind counts sum to their pair counts and add up to "all" bin by bin.
  const int64_t bins = g["histogram"]["bins"];
  const auto& edges = g["histogram"]["edges"];
  EXPECT_EQ(edges.size(), static_cast<size_t>(bins + 1));
  EXPECT_DOUBLE_EQ(edges.front().get<double>(), -1.0);
  EXPECT_DOUBLE_EQ(edges.back().get<double>(), 1.0);
  const auto& counts = g["histogram"]["counts"];
  int64_t total = 0;
  for (int64_t b = 0; b < bins; ++b) {
    total += counts["all"][b].get<int64_t>();
    EXPECT_EQ(counts["all"][b].get<int64_t>(), counts["correct_correct"][b].get<int64_t>() +
                                                    counts["mixed"][b].get<int64_t>() +
                                                    counts["incorrect_incorrect"][b].get<int64_t>())
        << "bin " << b;
  }
  EXPECT_EQ(total, pairs);
  for (const std::string kind : {"correct_correct", "mixed", "incorrect_incorrect"}) {
    int64_t sum = 0;
    for (const auto& c : counts[kind]) sum += c.get<int64_t>();
    EXPECT_EQ(sum, st[kind]["pairs"].get<int64_t>()) << kind;
  }

  // samples.jsonl: k responses per problem; per-problem correct counts.
  const auto samples = read_jsonl(out / "samples.jsonl");
  EXPECT_EQ(samples.size(), static_cast<size_t>(problems * k));
  std::map<std::pair<int64_t, int64_t>, bool> correct;
  std::map<int64_t, int64_t> correct_by_problem;
  for (const auto& s : samples) {
    correct[{s["problem"].get<int64_t>(), s["sample"].get<int64_t>()}] = s["correct"].get<bool>();
    correct_by_problem[s["problem"].get<int64_t>()] += s["correct"].get<bool>();
    EXPECT_FALSE(s["ids"].empty());
  }
  EXPECT_EQ(g["per_problem"].size(), static_cast<size_t>(problems));
  int64_t all_correct = 0;
  for (const auto& pp : g["per_problem"]) {
    EXPECT_EQ(pp["correct"].get<int64_t>(), correct_by_problem[pp["index"].get<int64_t>()]) << pp.dump();
    EXPECT_EQ(pp["pairs"], pairs_per_problem);
    all_correct += pp["correct"].get<int64_t>();
  }
  EXPECT_NEAR(g["accuracy"].get<double>(), static_cast<double>(all_correct) / static_cast<double>(problems * k), 1e-12);

  // pairs.jsonl: every unordered pair of each problem once, its kind from the two verdicts; the stats recomputed.
  const auto pair_rows = read_jsonl(out / "pairs.jsonl");
  EXPECT_EQ(pair_rows.size(), static_cast<size_t>(pairs));
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  std::map<std::string, double> sum, negative;
  std::map<std::string, int64_t> count;
  std::map<std::string, std::vector<int64_t>> hist;
  const std::map<int64_t, std::string> kind_name{{0, "incorrect_incorrect"}, {1, "mixed"}, {2, "correct_correct"}};
  for (const auto& p : pair_rows) {
    const int64_t problem = p["problem"], i = p["i"], j = p["j"], kind = p["kind"];
    const double c = p["cos"];
    EXPECT_LT(i, j);
    EXPECT_GE(i, 0);
    EXPECT_LT(j, k);
    EXPECT_TRUE(seen.insert({problem, i, j}).second) << "duplicate pair " << p.dump();
    const int64_t verdicts = int64_t(correct[std::make_pair(problem, i)]) + int64_t(correct[std::make_pair(problem, j)]);
    EXPECT_EQ(kind, verdicts) << p.dump();
    EXPECT_LE(std::abs(c), 1.0 + 1e-9);
    for (const std::string& name : {std::string("all"), kind_name.at(kind)}) {
      sum[name] += c;
      negative[name] += c < 0;
      ++count[name];
      auto& h = hist[name];
      h.resize(static_cast<size_t>(bins), 0);
      ++h[static_cast<size_t>(std::min<int64_t>(bins - 1, static_cast<int64_t>(std::floor((c + 1) / 2 * bins))))];
    }
  }
  for (const std::string name : {"all", "correct_correct", "mixed", "incorrect_incorrect"}) {
    EXPECT_EQ(st[name]["pairs"].get<int64_t>(), count[name]) << name;
    if (count[name] == 0) {
      EXPECT_TRUE(st[name]["mean_cos"].is_null()) << name;
      continue;
    }
    EXPECT_NEAR(stat(st[name]["mean_cos"]), sum[name] / count[name], 1e-9) << name;
    EXPECT_NEAR(stat(st[name]["neg_frac"]), negative[name] / count[name], 1e-12) << name;
    EXPECT_EQ(st[name]["negative_pairs"].get<int64_t>(), static_cast<int64_t>(negative[name])) << name;
    for (int64_t b = 0; b < bins; ++b)
      EXPECT_EQ(counts[name][b].get<int64_t>(), hist[name][static_cast<size_t>(b)]) << name << " bin " << b;
  }
  return g;
}

}  // namespace

TEST_F(G2rlGeometryCli, StatsMatchPairsAndFeaturesMatchAutograd) {
  ScratchDir dir;
  const auto out = dir.path() / "geo";
  const int64_t k = 4, problems = 5;
  const auto r = run_command(bin() + " analyze g2rl-geometry --model " + model_.string() + " --data " +
                             heldout_.string() + " --k 4 --problems 5 --bins 10 --out " + out.string() + shell_args());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("g2rl-geometry: 5 problems x 4 responses"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("incorrect-incorrect"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("scripts/plot_g2rl_geometry.py " + out.string()), std::string::npos) << r.output;
  ASSERT_TRUE(fs::exists(out / "geometry.json")) << r.output;
  const json g = check_outputs(out, problems, k);
  // The first `problems` of the file, in order.
  for (int64_t i = 0; i < problems; ++i) EXPECT_EQ(g["per_problem"][i]["index"], i);

  // Φ of the first two problems' responses by autograd: norms and pairwise cosines agree with the command's.
  namespace cfgns = introspect::config;
  const auto cfg = cfgns::from_overrides(kTask);
  const auto tok = introspect::tokenizer::Tokenizer::load(model_);
  const introspect::tokenizer::PromptFormatter format(cfg.data, *tok, model_);
  introspect::io::DatasetOptions dopt;
  const auto data = introspect::io::Dataset::load(heldout_, dopt);
  const auto m = introspect::model::CausalLM::load(model_);
  std::map<std::pair<int64_t, int64_t>, at::Tensor> phi;
  for (const auto& s : read_jsonl(out / "samples.jsonl")) {
    const int64_t problem = s["problem"];
    if (problem >= 2) continue;
    const auto prompt = format.encode(data.problems[static_cast<size_t>(problem)].prompt);
    const auto f = autograd_phi(m, prompt, s["ids"].get<std::vector<int32_t>>(), kTemperature);
    EXPECT_NEAR(f.norm().item<double>(), s["phi_norm"].get<double>(), 1e-4 * (1 + s["phi_norm"].get<double>()))
        << s.dump();
    phi[{problem, s["sample"].get<int64_t>()}] = f;
  }
  ASSERT_EQ(phi.size(), static_cast<size_t>(2 * k));
  int64_t checked = 0;
  for (const auto& p : read_jsonl(out / "pairs.jsonl")) {
    const int64_t problem = p["problem"];
    if (problem >= 2) continue;
    const auto& a = phi.at({problem, p["i"].get<int64_t>()});
    const auto& b = phi.at({problem, p["j"].get<int64_t>()});
    const double c = (a.dot(b) / (a.norm() * b.norm())).item<double>();
    EXPECT_NEAR(p["cos"].get<double>(), c, 1e-4) << p.dump();
    ++checked;
  }
  EXPECT_EQ(checked, 2 * k * (k - 1) / 2);
}

TEST_F(G2rlGeometryCli, ShuffledSubsetAndDeterminism) {
  ScratchDir dir;
  const std::string base = bin() + " analyze g2rl-geometry --model " + model_.string() + " --data " +
                           heldout_.string() + " --k 3 --problems 2 --shuffle --out ";
  const auto a = run_command(base + (dir.path() / "a").string() + shell_args() + " rollout.seed=5");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto b = run_command(base + (dir.path() / "b").string() + shell_args() + " rollout.seed=5");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const json ga = check_outputs(dir.path() / "a", 2, 3);
  check_outputs(dir.path() / "b", 2, 3);
  EXPECT_EQ(read_file(dir.path() / "a" / "pairs.jsonl"), read_file(dir.path() / "b" / "pairs.jsonl"));
  EXPECT_EQ(ga["selection"], "shuffled");
  EXPECT_LT(ga["per_problem"][0]["index"].get<int64_t>(), ga["per_problem"][1]["index"].get<int64_t>());
}

TEST_F(G2rlGeometryCli, BadInput) {
  ScratchDir dir;
  const auto missing = dir.path() / "nope.jsonl";
  auto r = run_command(bin() + " analyze g2rl-geometry --model " + model_.string() + " --data " + missing.string() +
                       " --out " + (dir.path() / "o").string() + shell_args());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(missing.string()), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.path() / "o" / "geometry.json"));

  r = run_command(bin() + " analyze g2rl-geometry --model " + model_.string() + " --data " + heldout_.string() +
                  " --k 1 --out " + (dir.path() / "o").string() + shell_args());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--k 1"), std::string::npos) << r.output;

  r = run_command(bin() + " analyze g2rl-geometry --model " + (dir.path() / "no-model").string() + " --data " +
                  heldout_.string() + shell_args());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no-model"), std::string::npos) << r.output;

  // A malformed row names the file and line.
  const auto bad = dir.write("bad.jsonl", "{\"problem\": \"reverse 12\", \"answer\": \"21\"}\n{not json\n");
  r = run_command(bin() + " analyze g2rl-geometry --model " + model_.string() + " --data " + bad.string() +
                  " --out " + (dir.path() / "o").string() + shell_args());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(bad.string() + ":2"), std::string::npos) << r.output;
}
