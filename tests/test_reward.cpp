// Reward modules: RewardSet's weighting, metric names and error counting; the registry's errors; format's full
// match; overlong against verl's formula (and TRL's, where they differ); the external worker pool under hangs,
// crashes and garbage; and a small math check (the verifier has its own tests).
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "introspect/config/schema.h"
#include "introspect/reward/reward.h"
#include "test_util.h"

using introspect::config::RewardConfig;
using introspect::reward::Group;
using introspect::reward::make_reward_module;
using introspect::reward::Response;
using introspect::reward::RewardModule;
using introspect::reward::RewardSet;
using introspect::reward::Scores;
using introspect::reward::WeightedModule;

namespace {

const std::string kWorkers = std::string(INTROSPECT_SOURCE_DIR) + "/tests/data/reward_workers/";

Response response(std::string text, size_t length = 0, bool truncated = false) {
  Response r;
  r.text = std::move(text);
  r.ids.assign(length, 7);
  r.truncated = truncated;
  return r;
}

Group group(std::vector<Response> responses, std::string ground_truth = "", std::string prompt = "P",
            int64_t max_new_tokens = 100) {
  Group g;
  g.prompt = std::move(prompt);
  g.ground_truth = std::move(ground_truth);
  g.max_new_tokens = max_new_tokens;
  g.responses = std::move(responses);
  return g;
}

// Scores every response `value`; with `flaky`, throws for groups whose prompt is "bad". Reports a rate and a
// count.
class FixedModule : public RewardModule {
 public:
  FixedModule(std::string name, double value, bool grades, bool flaky)
      : name_(std::move(name)), value_(value), grades_(grades), flaky_(flaky) {}
  std::string_view name() const override { return name_; }
  bool grades_answers() const override { return grades_; }
  bool is_count_metric(std::string_view metric) const override { return metric == "calls"; }
  Scores score(const std::vector<Group>& groups) override {
    ++calls_;
    Scores s;
    double prompts_named_p = 0, responses = 0;
    for (const auto& g : groups) {
      if (flaky_ && g.prompt == "bad") throw std::runtime_error("cannot score prompt `bad`");
      s.rewards.emplace_back(g.responses.size(), value_);
      if (grades_) s.correct.emplace_back(g.responses.size(), true);
      responses += static_cast<double>(g.responses.size());
      if (g.prompt == "P") prompts_named_p += static_cast<double>(g.responses.size());
    }
    s.metrics["p_rate"] = prompts_named_p / responses;
    s.metrics["calls"] = 1;
    return s;
  }
  int calls_ = 0;

 private:
  std::string name_;
  double value_;
  bool grades_;
  bool flaky_;
};

// Answers one reward too few: a shape bug that RewardSet must count rather than index past.
class ShortModule : public RewardModule {
 public:
  std::string_view name() const override { return "short"; }
  Scores score(const std::vector<Group>& groups) override {
    Scores s;
    for (const auto& g : groups) s.rewards.emplace_back(g.responses.size() - 1, 1.0);
    return s;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

RewardConfig external_config(std::vector<std::string> command, int64_t workers, double timeout_s) {
  RewardConfig c;
  c.modules = {"external"};
  c.external.command = std::move(command);
  c.external.workers = workers;
  c.external.timeout_s = timeout_s;
  c.external.failure_score = -7;
  return c;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// ---- RewardSet --------------------------------------------------------------------------------------------

TEST(RewardSet, SumsWeightedModulesAndNamesTheirMetrics) {
  RewardConfig c;
  c.modules = {"format", "overlong"};
  c.format.pattern = "ok.*";
  c.format.weight = 0.5;
  c.overlong.weight = 2.0;
  c.overlong.buffer_len = 20;
  RewardSet set(c);
  // max_new_tokens 100, buffer 20: 90 tokens lose (90-80)/20 = 0.5.
  const std::vector<Group> groups = {group({response("ok fine", 10), response("bad", 90)}),
                                     group({response("ok long", 90)})};
  const Scores s = set.score(groups);
  ASSERT_EQ(s.rewards.size(), 2u);
  ASSERT_EQ(s.rewards[0].size(), 2u);
  ASSERT_EQ(s.rewards[1].size(), 1u);
  EXPECT_DOUBLE_EQ(s.rewards[0][0], 0.5 * 1 + 2.0 * 0);
  EXPECT_DOUBLE_EQ(s.rewards[0][1], 0.5 * 0 + 2.0 * -0.5);
  EXPECT_DOUBLE_EQ(s.rewards[1][0], 0.5 * 1 + 2.0 * -0.5);
  EXPECT_TRUE(s.correct.empty());  // no module grades answers
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/format/match_rate"), 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/format/mean"), 2.0 / 3);  // unweighted
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/format/errors"), 0);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/overlong/penalized_rate"), 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/overlong/mean_penalty"), -0.5);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/overlong/mean"), -1.0 / 3);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/overlong/errors"), 0);
  EXPECT_TRUE(s.metrics.count("reward/overlong/seconds"));
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/mean"), (0.5 + -1.0 + -0.5) / 3);
}

TEST(RewardSet, AThrowingModuleCostsOnlyTheFailingGroups) {
  std::vector<WeightedModule> modules;
  auto flaky = std::make_unique<FixedModule>("flaky", 1.0, /*grades=*/true, /*flaky=*/true);
  FixedModule* flaky_ptr = flaky.get();
  modules.push_back({std::move(flaky), 3.0});
  modules.push_back({std::make_unique<FixedModule>("steady", 0.25, false, false), 1.0});
  modules.push_back({std::make_unique<ShortModule>(), 1.0});
  RewardSet set(std::move(modules));
  const std::vector<Group> groups = {group({response("a"), response("b")}, "", "P"),
                                     group({response("c")}, "", "bad"),
                                     group({response("d"), response("e"), response("f")}, "", "Q")};
  const Scores s = set.score(groups);
  // flaky scores 3 * 1 except in the "bad" group, which gets 0 from it; steady adds 0.25 everywhere; short adds
  // nothing anywhere, its wrong shape being an error in every group.
  EXPECT_DOUBLE_EQ(s.rewards[0][0], 3.25);
  EXPECT_DOUBLE_EQ(s.rewards[0][1], 3.25);
  EXPECT_DOUBLE_EQ(s.rewards[1][0], 0.25);
  EXPECT_DOUBLE_EQ(s.rewards[2][2], 3.25);
  EXPECT_EQ(flaky_ptr->calls_, 1 + 3);  // the batch, then each group
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/flaky/errors"), 1);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/steady/errors"), 0);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/short/errors"), 3);
  // Counts add up over the groups that scored; rates are re-averaged over their responses (2 of 5 are "P").
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/flaky/calls"), 2);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/flaky/p_rate"), 2.0 / 5);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/steady/calls"), 1);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/steady/p_rate"), 2.0 / 6);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/flaky/mean"), 5.0 / 6);
  // Verdicts come from the grading module; its failed group is graded wrong.
  ASSERT_EQ(s.correct.size(), 3u);
  EXPECT_EQ(s.correct[0], (std::vector<bool>{true, true}));
  EXPECT_EQ(s.correct[1], (std::vector<bool>{false}));
  EXPECT_EQ(s.correct[2], (std::vector<bool>{true, true, true}));
}

TEST(RewardSet, ConfigErrorsNameTheKey) {
  RewardConfig c;
  c.modules = {"math", "sparkle"};
  const std::string unknown = error_of([&] { RewardSet set(c); });
  EXPECT_NE(unknown.find("reward.modules"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("`sparkle`"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("math, format, overlong, external"), std::string::npos) << unknown;
  EXPECT_NE(error_of([&] { make_reward_module("sparkle", c); }).find("reward.modules"), std::string::npos);
  EXPECT_EQ(introspect::reward::reward_module_names(),
            (std::vector<std::string>{"math", "format", "overlong", "external"}));

  c.modules = {"format", "format"};
  EXPECT_NE(error_of([&] { RewardSet set(c); }).find("listed twice"), std::string::npos);
  c.modules = {};
  EXPECT_NE(error_of([&] { RewardSet set(c); }).find("reward.modules: empty"), std::string::npos);
}

// ---- format -----------------------------------------------------------------------------------------------

TEST(FormatReward, TheWholeResponseMustMatch) {
  RewardConfig c;
  c.format.pattern = "abc";
  c.format.matched = 2;
  c.format.unmatched = -1;
  auto module = make_reward_module("format", c);
  const Scores s = module->score({group({response("abc"), response("abcd"), response("xabc"), response("ab")})});
  EXPECT_EQ(s.rewards[0], (std::vector<double>{2, -1, -1, -1}));
  EXPECT_DOUBLE_EQ(s.metrics.at("match_rate"), 0.25);
  EXPECT_DOUBLE_EQ(s.metrics.at("match_errors"), 0);
}

TEST(FormatReward, TheDefaultPatternWantsABoxedAnswerOutsideTheThinking) {
  const RewardConfig c;
  auto module = make_reward_module("format", c);
  const Scores s = module->score({group({
      response("<think>\nlet me see\n</think>\nSo the answer is \\boxed{3}."),
      response("No thinking, straight to \\boxed{42}"),
      response("<think>\nthe answer is \\boxed{3}\n</think>\nI give up."),  // the box is inside the thinking
      response("<think>unfinished \\boxed{3}"),
      response("plain text"),
  })});
  EXPECT_EQ(s.rewards[0], (std::vector<double>{1, 1, 0, 0, 0}));
}

TEST(FormatReward, ABadPatternIsAConfigErrorWithPcre2sMessage) {
  RewardConfig c;
  c.format.pattern = "a(b";
  const std::string e = error_of([&] { make_reward_module("format", c); });
  EXPECT_NE(e.find("reward.format.pattern"), std::string::npos) << e;
  EXPECT_NE(e.find("missing closing parenthesis"), std::string::npos) << e;
  EXPECT_NE(e.find("offset 3"), std::string::npos) << e;
}

// ---- overlong ---------------------------------------------------------------------------------------------

namespace {
// verl/workers/reward_manager/dapo.py, verbatim in C++.
double verl_penalty(int64_t length, int64_t max_len, int64_t buffer, double factor) {
  const int64_t expected = max_len - buffer;
  const int64_t exceed = length - expected;
  return std::min(-static_cast<double>(exceed) / static_cast<double>(buffer) * factor, 0.0);
}
// trl.rewards.get_soft_overlong_punishment.
double trl_penalty(int64_t length, int64_t max_len, int64_t cache) {
  if (length <= max_len - cache) return 0.0;
  if (length <= max_len) return static_cast<double>(max_len - cache - length) / static_cast<double>(cache);
  return -1.0;
}
}  // namespace

TEST(OverlongReward, FollowsVerlsFormula) {
  RewardConfig c;
  c.overlong.buffer_len = 20;
  c.overlong.penalty_factor = 1.0;
  auto module = make_reward_module("overlong", c);
  const std::vector<int64_t> lengths = {0, 50, 80, 81, 90, 99, 100, 110};
  std::vector<Response> responses;
  for (int64_t n : lengths) responses.push_back(response("x", static_cast<size_t>(n)));
  const Scores s = module->score({group(responses, "", "P", 100)});
  // By hand: expected = 100 - 20 = 80; penalty = -(len - 80) / 20 below 0.
  const std::vector<double> by_hand = {0, 0, 0, -0.05, -0.5, -0.95, -1.0, -1.5};
  for (size_t i = 0; i < lengths.size(); ++i) {
    EXPECT_NEAR(s.rewards[0][i], by_hand[i], 1e-12) << lengths[i];
    EXPECT_NEAR(s.rewards[0][i], verl_penalty(lengths[i], 100, 20, 1.0), 1e-12) << lengths[i];
    EXPECT_FALSE(std::signbit(s.rewards[0][i]) && s.rewards[0][i] == 0) << "-0 at " << lengths[i];
  }
  EXPECT_DOUBLE_EQ(s.metrics.at("penalized_rate"), 5.0 / 8);
  EXPECT_NEAR(s.metrics.at("mean_penalty"), (-0.05 - 0.5 - 0.95 - 1.0 - 1.5) / 5, 1e-12);

  // TRL agrees up to max_new_tokens and caps at -1 above it, where verl keeps falling.
  for (size_t i = 0; i + 1 < lengths.size(); ++i) {
    EXPECT_NEAR(s.rewards[0][i], trl_penalty(lengths[i], 100, 20), 1e-12) << lengths[i];
  }
  EXPECT_DOUBLE_EQ(trl_penalty(110, 100, 20), -1.0);
  EXPECT_DOUBLE_EQ(s.rewards[0].back(), -1.5);
}

TEST(OverlongReward, PenaltyFactorScalesAndBadLimitsThrow) {
  RewardConfig c;
  c.overlong.buffer_len = 20;
  c.overlong.penalty_factor = 0.5;
  auto module = make_reward_module("overlong", c);
  const Scores s = module->score({group({response("x", 90), response("x", 100)}, "", "P", 100)});
  EXPECT_DOUBLE_EQ(s.rewards[0][0], -0.25);  // -(90 - 80) / 20 * 0.5
  EXPECT_DOUBLE_EQ(s.rewards[0][1], -0.5);
  EXPECT_THROW(module->score({group({response("x", 5)}, "", "P", 0)}), std::invalid_argument);
  try {
    module->score({group({response("x", 5)}, "", "P", 10)});
    ADD_FAILURE() << "buffer_len above max_new_tokens must throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("reward.overlong.buffer_len"), std::string::npos) << e.what();
  }
}

// ---- external ---------------------------------------------------------------------------------------------

TEST(ExternalReward, AWellBehavedWorkerSeesEveryField) {
  RewardConfig c = external_config({"python3", kWorkers + "good.py"}, 3, 20);
  auto module = make_reward_module("external", c);
  std::vector<Group> groups;
  for (int g = 0; g < 4; ++g) {
    Group gr = group({response("the answer is 42", 3), response("no idea", 5, true), response("42!", 1)}, "42");
    gr.metadata = {{"bonus", g * 100}};
    groups.push_back(gr);
  }
  for (int call = 0; call < 2; ++call) {  // the second call reuses the running workers
    const Scores s = module->score(groups);
    ASSERT_EQ(s.rewards.size(), 4u);
    for (int g = 0; g < 4; ++g) {
      EXPECT_EQ(s.rewards[g], (std::vector<double>{3 + 10 + 100.0 * g, 5 + 0.5 + 100.0 * g, 1 + 10 + 100.0 * g}));
    }
    EXPECT_DOUBLE_EQ(s.metrics.at("timeouts"), 0);
    EXPECT_DOUBLE_EQ(s.metrics.at("crashes"), 0);
    EXPECT_DOUBLE_EQ(s.metrics.at("bad_replies"), 0);
  }
}

TEST(ExternalReward, AHangingSampleTimesOutAloneAndTheRestAreScored) {
  const double timeout = 1.5;
  RewardConfig c = external_config({"python3", kWorkers + "good.py"}, 2, timeout);
  auto module = make_reward_module("external", c);
  std::vector<Response> responses;
  for (int i = 0; i < 8; ++i) responses.push_back(response(i == 2 ? "HANG" : "ok", static_cast<size_t>(i)));
  const auto start = std::chrono::steady_clock::now();
  const Scores s = module->score({group(responses)});
  const double elapsed = seconds_since(start);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(s.rewards[0][i], i == 2 ? -7.0 : i) << i;
  EXPECT_DOUBLE_EQ(s.metrics.at("timeouts"), 1);
  EXPECT_DOUBLE_EQ(s.metrics.at("crashes"), 0);
  EXPECT_GE(elapsed, timeout);
  EXPECT_LT(elapsed, 2 * timeout);  // the hang was waited out once, with the other samples scored meanwhile
  // The killed worker comes back on the next call.
  const Scores again = module->score({group({response("ok", 4), response("ok", 6)})});
  EXPECT_EQ(again.rewards[0], (std::vector<double>{4, 6}));
  EXPECT_DOUBLE_EQ(again.metrics.at("timeouts"), 0);
}

TEST(ExternalReward, AHangInAShellWorkersChildIsKilledWithItsGroup) {
  introspect::testing::ScratchDir dir;
  const auto pid_file = dir.path() / "pids";
  const double timeout = 0.5;
  RewardConfig c = external_config({kWorkers + "hang_in_shell.sh", pid_file.string()}, 1, timeout);
  auto module = make_reward_module("external", c);
  const auto start = std::chrono::steady_clock::now();
  const Scores s = module->score({group({response("a"), response("HANG"), response("b"), response("c")})});
  const double elapsed = seconds_since(start);
  EXPECT_EQ(s.rewards[0], (std::vector<double>{1, -7, 1, 1}));
  EXPECT_DOUBLE_EQ(s.metrics.at("timeouts"), 1);
  EXPECT_LT(elapsed, timeout + 2.0);
  // The first worker's group, its sleeping child included, is gone; the restarted worker is alive.
  pid_t first = 0, second = 0;
  std::ifstream(pid_file) >> first >> second;
  ASSERT_GT(first, 0);
  ASSERT_GT(second, 0);
  // The orphaned sleep is reaped by init, which may take a moment; a sleep left running would stay for an hour.
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = kill(-first, 0) != 0 && errno == ESRCH;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone) << "process group " << first << " still has members";
  EXPECT_EQ(kill(-second, 0), 0);
}

TEST(ExternalReward, ACrashIsCountedAndTheWorkerRestarts) {
  RewardConfig c = external_config({"python3", kWorkers + "good.py"}, 1, 20);
  auto module = make_reward_module("external", c);
  const Scores s = module->score({group({response("a", 1), response("CRASH", 2), response("b", 3)}),
                                  group({response("CRASH"), response("c", 4)})});
  EXPECT_EQ(s.rewards[0], (std::vector<double>{1, -7, 3}));
  EXPECT_EQ(s.rewards[1], (std::vector<double>{-7, 4}));
  EXPECT_DOUBLE_EQ(s.metrics.at("crashes"), 2);
  EXPECT_DOUBLE_EQ(s.metrics.at("timeouts"), 0);
  EXPECT_DOUBLE_EQ(s.metrics.at("answered_mean"), (1 + 3 + 4) / 3.0);
}

TEST(ExternalReward, GarbageRepliesAreCountedAndTheWorkerRestarts) {
  RewardConfig c = external_config({"python3", kWorkers + "good.py"}, 1, 20);
  auto module = make_reward_module("external", c);
  const Scores s = module->score({group({response("GARBAGE", 1), response("x", 2), response("NOREWARD", 3),
                                         response("y", 4), response("NAN", 5), response("z", 6)})});
  EXPECT_EQ(s.rewards[0], (std::vector<double>{-7, 2, -7, 4, -7, 6}));
  EXPECT_DOUBLE_EQ(s.metrics.at("bad_replies"), 3);
  EXPECT_DOUBLE_EQ(s.metrics.at("crashes"), 0);
}

TEST(ExternalReward, ThroughRewardSetWithWeightAndMetricNames) {
  RewardConfig c = external_config({"python3", kWorkers + "good.py"}, 2, 20);
  c.external.weight = 0.5;
  RewardSet set(c);
  const Scores s = set.score({group({response("CRASH"), response("x", 4)})});
  EXPECT_EQ(s.rewards[0], (std::vector<double>{-3.5, 2}));
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/external/crashes"), 1);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/external/mean"), (-7 + 4) / 2.0);
  EXPECT_DOUBLE_EQ(s.metrics.at("reward/external/errors"), 0);
}

TEST(ExternalReward, ShutdownKillsAWorkerThatIgnoresEndOfInput) {
  introspect::testing::ScratchDir dir;
  const auto pid_file = dir.path() / "pid";
  RewardConfig c = external_config({kWorkers + "ignores_eof.sh", pid_file.string()}, 1, 20);
  auto module = make_reward_module("external", c);
  EXPECT_EQ(module->score({group({response("a")})}).rewards[0], (std::vector<double>{2}));
  pid_t pid = 0;
  std::ifstream(pid_file) >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, 0), 0);  // alive
  const auto start = std::chrono::steady_clock::now();
  module.reset();
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_NE(kill(pid, 0), 0);  // killed and reaped: the id no longer names a process
}

TEST(ExternalReward, ABadCommandIsAConfigError) {
  RewardConfig c = external_config({}, 1, 1);
  EXPECT_NE(error_of([&] { make_reward_module("external", c); }).find("reward.external.command"), std::string::npos);
  c.external.command = {"/nonexistent/reward-worker"};
  const std::string e = error_of([&] { make_reward_module("external", c); });
  EXPECT_NE(e.find("reward.external.command"), std::string::npos) << e;
  EXPECT_NE(e.find("/nonexistent/reward-worker"), std::string::npos) << e;
}

// ---- math -------------------------------------------------------------------------------------------------

TEST(MathReward, GradesBoxedAnswersAfterTheThinking) {
  RewardConfig c;
  c.math.correct = 1;
  c.math.incorrect = -0.5;
  auto module = make_reward_module("math", c);
  EXPECT_TRUE(module->grades_answers());
  const Scores s = module->score({
      group({response("So \\boxed{3}."), response("Hence \\boxed{4}"), response("I do not know"),
             response("<think>maybe \\boxed{3}</think>Final: \\boxed{5}"),
             response("<think>maybe \\boxed{5}</think>Final: \\boxed{3}")},
            "3"),
      group({response("\\boxed{\\frac{1}{2}}"), response("\\boxed{0.5}"), response("\\boxed{2}")}, "\\frac12"),
  });
  EXPECT_EQ(s.rewards[0], (std::vector<double>{1, -0.5, -0.5, -0.5, 1}));
  EXPECT_EQ(s.correct[0], (std::vector<bool>{true, false, false, false, true}));
  EXPECT_EQ(s.correct[1], (std::vector<bool>{true, true, false}));
  EXPECT_DOUBLE_EQ(s.metrics.at("accuracy"), 4.0 / 8);
  EXPECT_DOUBLE_EQ(s.metrics.at("no_answer_rate"), 1.0 / 8);
}
