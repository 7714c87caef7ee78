// The training loop: learning-rate schedule, atomic checkpoints (including a full disk), bad input, exact
// resume after SIGKILL, and the embedded demo raising held-out accuracy.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <map>
#include <set>
#include <regex>
#include <thread>

#include "introspect/config/config.h"
#include "introspect/io/safetensors.h"
#include "introspect/model/decoder.h"
#include "introspect/reward/math_verifier.h"
#include "introspect/train/checkpoint.h"
#include "introspect/train/demo.h"
#include "introspect/train/trainer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using introspect::testing::read_file;
using introspect::testing::run_command;
using introspect::testing::read_jsonl;
using introspect::testing::ScratchDir;
using nlohmann::json;
namespace train = introspect::train;
namespace config = introspect::config;

namespace {

// A small GRPO or SFT run on the demo's task and model, written into dir.
config::Config small_run(const fs::path& dir, const std::string& mode) {
  config::DemoConfig demo;
  demo.heldout = 20;
  demo.train_problems = 200;
  train::write_demo_task(dir / "data", demo, 1);
  train::write_demo_model(dir / "model", 1);
  auto c = config::from_overrides({});
  c.model.path = (dir / "model").string();
  c.run.out_dir = (dir / "run").string();
  c.run.threads = 1;
  c.log.progress = "off";
  c.train.mode = mode;
  c.data.train_path = (dir / "data" / (mode == "sft" ? "sft.jsonl" : "train.jsonl")).string();
  c.data.chat_template = "custom";
  c.data.custom_chat_template = "{user}";
  c.data.response_field = "solution";
  c.rollout.n = 4;
  c.rollout.max_new_tokens = 6;
  c.train.prompts_per_step = 4;
  c.train.mini_batch_size = 8;
  c.train.micro_batch_size = 4;
  c.train.total_steps = 3;
  c.train.lr = 1e-3;
  c.reward.math.extract = "boxed";
  return c;
}

// Metric lines without the keys that measure time, which no two runs share.
std::vector<json> without_timings(std::vector<json> lines) {
  for (auto& l : lines)
    for (auto it = l.begin(); it != l.end();)
      it = (it.key().rfind("time/", 0) == 0 || it.key().rfind("throughput/", 0) == 0 ||
            (it.key().size() >= 8 && it.key().compare(it.key().size() - 8, 8, "/seconds") == 0))
               ? l.erase(it)
               : std::next(it);
  return lines;
}

}  // namespace

TEST(LearningRate, WarmupThenConstantOrCosine) {
  config::TrainConfig t;
  t.lr = 1.0;
  t.warmup_steps = 4;
  t.total_steps = 14;
  EXPECT_DOUBLE_EQ(train::learning_rate_at(t, 0), 0.25);
  EXPECT_DOUBLE_EQ(train::learning_rate_at(t, 3), 1.0);
  EXPECT_DOUBLE_EQ(train::learning_rate_at(t, 9), 1.0);
  t.lr_schedule = "cosine";
  EXPECT_DOUBLE_EQ(train::learning_rate_at(t, 4), 1.0);
  EXPECT_NEAR(train::learning_rate_at(t, 9), 0.5, 1e-12);  // halfway through the 10 decay steps
  EXPECT_NEAR(train::learning_rate_at(t, 14), 0.0, 1e-12);
}

TEST(Checkpoint, OnlyCompleteFoldersArePickedAndPruned) {
  ScratchDir dir;
  const auto root = dir.path() / "checkpoints";
  for (int step : {2, 4, 6}) {
    train::write_checkpoint(root, step, [&](const fs::path& tmp) { std::ofstream(tmp / "w") << step; });
  }
  fs::create_directories(root / "step_8");  // a crash before DONE
  std::ofstream(root / "step_8" / "w") << 8;
  ASSERT_TRUE(train::latest_checkpoint(root));
  EXPECT_EQ(train::latest_checkpoint(root)->step, 6);
  train::prune_checkpoints(root, 2);
  EXPECT_FALSE(fs::exists(root / "step_2"));
  EXPECT_TRUE(fs::exists(root / "step_4" / "DONE"));
  EXPECT_TRUE(fs::exists(root / "step_6" / "DONE"));
  EXPECT_FALSE(fs::exists(root / "step_8"));
}

TEST(Checkpoint, AFailedWriteKeepsThePreviousOne) {
  ScratchDir dir;
  const auto root = dir.path() / "checkpoints";
  train::write_checkpoint(root, 1, [](const fs::path& tmp) { std::ofstream(tmp / "w") << "one"; });
  EXPECT_THROW(train::write_checkpoint(root, 2,
                                       [](const fs::path& tmp) {
                                         std::ofstream(tmp / "w") << "partial";
                                         throw std::runtime_error("No space left on device");
                                       }),
               std::runtime_error);
  EXPECT_EQ(train::latest_checkpoint(root)->step, 1);
  EXPECT_FALSE(fs::exists(root / "step_2"));
  EXPECT_FALSE(fs::exists(root / ".tmp_step_2"));
}

// A real write failure from the kernel: a file-size limit makes the write fail with EFBIG, as a full disk
// fails with ENOSPC. The run goes on, counts the failure, and the previous checkpoint stays complete.
TEST(Checkpoint, FullDiskDuringTrainingKeepsThePreviousCheckpoint) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "sft");
  c.train.total_steps = 2;
  c.train.save_every = 1;
  c.train.keep_last = 5;
  train::run(c);
  ASSERT_EQ(train::latest_checkpoint(fs::path(c.run.out_dir) / "checkpoints")->step, 2);

  c.train.total_steps = 3;
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 64 * 1024;  // smaller than the model file, larger than the metrics and the log
  setrlimit(RLIMIT_FSIZE, &small);
  train::RunResult result;
  try {
    result = train::run(c, {true});
  } catch (const std::exception& e) {
    // The final export cannot be written either; what matters is the checkpoint folder.
    EXPECT_NE(std::string(e.what()).find("model"), std::string::npos) << e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  const auto latest = train::latest_checkpoint(fs::path(c.run.out_dir) / "checkpoints");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step, 2);
  EXPECT_FALSE(fs::exists(fs::path(c.run.out_dir) / "checkpoints" / "step_3"));
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(metrics.back()["train/checkpoint_failures"].get<double>(), 0.0);  // written before the save
  EXPECT_NE(read_file(fs::path(c.run.out_dir) / "train.log").find("checkpoint at step 3 failed"), std::string::npos);
}

TEST(BadInput, EmptyDatasetIsAClearError) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "grpo");
  c.data.train_path = dir.write("empty.jsonl", "").string();
  try {
    train::run(c);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("empty.jsonl"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no usable"), std::string::npos) << e.what();
  }
}

TEST(BadInput, LongPromptsAreSkippedAndCounted) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "grpo");
  std::string rows;
  for (int i = 0; i < 6; ++i) rows += json{{"problem", std::to_string(i) + "+1="}, {"answer", std::to_string(i + 1)}}.dump() + "\n";
  rows += json{{"problem", std::string(200, '7') + "+1="}, {"answer", "1"}}.dump() + "\n";
  c.data.train_path = dir.write("mixed.jsonl", rows).string();
  c.data.max_prompt_tokens = 16;
  c.train.total_steps = 1;
  train::run(c);
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0]["data/skipped_long_prompts"].get<double>(), 1.0);
}

TEST(BadInput, NonFiniteLossesAreSkippedThenStopTraining) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "sft");
  // Poison one weight: every loss becomes NaN.
  {
    auto m = introspect::model::CausalLM::load(c.model.path);
    c10::NoGradGuard g;
    m.named_parameters()[1].second.view(-1)[0] = std::nanf("");
    m.save(c.model.path);
  }
  c.train.total_steps = 10;
  c.train.max_nonfinite_steps = 3;
  try {
    train::run(c);
    FAIL() << "expected training to stop";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("3 updates in a row"), std::string::npos) << e.what();
  }
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);  // the third step throws before its line is written
  for (const auto& m : metrics) EXPECT_EQ(m["train/skipped_nonfinite"].get<double>(), 1.0);
}

TEST(Train, SplittingIntoMicroBatchesGivesTheSameUpdate) {
  // verl's global-count normalisation: neither the micro-batch size nor a token budget over length-sorted
  // sequences (train.micro_batch_tokens) may change the gradient (fp32 tolerance).
  struct Run {
    std::vector<at::Tensor> weights;
    nlohmann::json metrics;
  };
  auto run_with = [](int64_t micro, int64_t tokens, const std::string& agg) {
    ScratchDir dir;
    auto c = small_run(dir.path(), "grpo");
    c.train.total_steps = 1;
    c.train.micro_batch_size = micro;
    c.train.micro_batch_tokens = tokens;
    c.train.mini_batch_size = 16;
    c.algo.loss_agg_mode = agg;
    c.train.old_logprob = "recompute";
    train::run(c);
    const auto m = introspect::model::CausalLM::load(fs::path(c.run.out_dir) / "export");
    Run r;
    for (const auto& p : m.parameters()) r.weights.push_back(p.clone());
    r.metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl").at(0);
    return r;
  };
  for (const std::string agg : {"token-mean", "seq-mean-token-mean"}) {
    const auto whole = run_with(16, 0, agg);
    for (const auto& [micro, tokens] : {std::pair<int64_t, int64_t>{3, 0}, {16, 60}}) {
      const auto split = run_with(micro, tokens, agg);
      double max_diff = 0;
      for (size_t i = 0; i < whole.weights.size(); ++i)
        max_diff = std::max(max_diff, (whole.weights[i] - split.weights[i]).abs().max().item<double>());
      EXPECT_LT(max_diff, 1e-6) << agg << " micro " << micro << " tokens " << tokens;
      EXPECT_GT(split.metrics.at("actor/micro_batches").get<double>(), 1.0);
    }
  }
}

// Kill training with SIGKILL at a random point of a step, resume with --resume auto, and compare with an
// uninterrupted run: the metrics (timings aside) and the exported weights must be bit-identical.
TEST(Train, ResumeAfterSigkillIsBitIdentical) {
  ScratchDir dir;
  const std::string bin = INTROSPECT_BINARY;
  // Enough warm start that GRPO has mixed groups and really moves the weights.
  const std::string common = " demo.sft_steps=150 demo.grpo_steps=8 train.deterministic=true run.threads=2 "
                             "log.progress=off train.seed=3";
  const auto full = dir.path() / "full";
  auto r = run_command(bin + " train --out " + full.string() + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto killed = dir.path() / "killed";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + bin + " train --out " + killed.string() + common + " > /dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until GRPO has finished a few steps, then kill at a random moment inside a later one.
  const auto metrics = killed / "grpo" / "metrics.jsonl";
  std::mt19937 rng(std::random_device{}());
  const int wait_steps = 3 + static_cast<int>(rng() % 3);
  for (int i = 0; i < 6000; ++i) {
    if (fs::exists(metrics) && read_jsonl(metrics).size() >= static_cast<size_t>(wait_steps)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before the kill";
  ASSERT_FALSE(fs::exists(killed / "grpo" / "export"));

  r = run_command(bin + " train --out " + killed.string() + common + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto a = without_timings(read_jsonl(full / "grpo" / "metrics.jsonl"));
  const auto b = without_timings(read_jsonl(killed / "grpo" / "metrics.jsonl"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "metrics line " << i;
  double grad_norm_sum = 0;
  for (const auto& line : a) grad_norm_sum += line.value("actor/grad_norm", 0.0);
  EXPECT_GT(grad_norm_sum, 0.0) << "GRPO never updated the weights: the comparison would be vacuous";
  EXPECT_EQ(read_file(full / "grpo" / "export" / "model.safetensors"),
            read_file(killed / "grpo" / "export" / "model.safetensors"));
}

// A run killed before its first checkpoint leaves metric lines and nothing to resume from: --resume auto starts
// over, and the lines of the lost attempt must go rather than precede the new run's (as CI once caught the
// SIGKILL test above doing, when the kill beat the first save).
TEST(Train, ResumeWithoutACheckpointStartsTheMetricsOver) {
  ScratchDir full_dir, killed_dir;
  auto full = small_run(full_dir.path(), "grpo");
  full.train.deterministic = true;
  train::run(full);
  const auto expected = without_timings(read_jsonl(fs::path(full.run.out_dir) / "metrics.jsonl"));
  ASSERT_EQ(expected.size(), 3u);

  auto again = small_run(killed_dir.path(), "grpo");
  again.train.deterministic = true;
  const auto metrics = fs::path(again.run.out_dir) / "metrics.jsonl";
  fs::create_directories(metrics.parent_path());
  std::ofstream(metrics) << R"({"step":0,"eval/accuracy":0.5})" << "\n"  // as a run with data.eval_path writes
                         << R"({"step":1,"reward/mean":0.25})" << "\n"
                         << R"({"step":2,"reward/mean":0.5})" << "\n"
                         << R"({"step":3,"rew)";  // torn by the kill
  ASSERT_FALSE(fs::exists(fs::path(again.run.out_dir) / "checkpoints"));
  train::run(again, {true});
  EXPECT_EQ(without_timings(read_jsonl(metrics)), expected);
}

// The embedded demo as shipped (about 35 s here): GRPO must raise held-out accuracy over the SFT warm start.
TEST(Demo, GrpoRaisesHeldOutAccuracy) {
  ScratchDir dir;
  const auto r = run_command(std::string(INTROSPECT_BINARY) + " train --out " + dir.path().string() +
                             " log.progress=off run.threads=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex(R"(held-out accuracy: before ([0-9.]+) after ([0-9.]+))")))
      << r.output;
  const double before = std::stod(m[1]), after = std::stod(m[2]);
  EXPECT_GT(after, before + 0.05) << r.output;
}

// MASA's toy: four families with pass rates a gate must tell apart. Guesses have 4-digit hash answers and flips
// one hash bit (both values occur, so a policy can only be right half the time); reversals are graded by the
// reversed number; every demonstration of a guess, flip or short reversal shows the true answer; each problem has
// its meta demonstration; held-out problems are new.
TEST(Demo, MasaTaskHasGuessesFlipsAndReversals) {
  ScratchDir dir;
  config::DemoConfig demo;
  demo.heldout = 50;
  demo.train_problems = 1000;
  train::write_masa_task(dir.path(), demo, 3);
  const auto heldout = read_jsonl(dir.path() / "heldout.jsonl");
  const auto train_rows = read_jsonl(dir.path() / "train.jsonl");
  const auto sft = read_jsonl(dir.path() / "sft.jsonl");
  ASSERT_EQ(heldout.size(), 50u);
  ASSERT_EQ(train_rows.size(), 1000u);
  ASSERT_EQ(sft.size(), 2000u);  // a solution and a meta demonstration per training problem
  std::set<std::string> seen;
  for (const auto& row : train_rows) seen.insert(row["problem"].get<std::string>());
  EXPECT_EQ(seen.size(), train_rows.size());
  for (const auto& row : heldout) EXPECT_FALSE(seen.count(row["problem"].get<std::string>())) << row.dump();
  std::map<std::string, int> family;
  std::set<std::string> flip_answers;
  for (const auto& row : train_rows) {
    const std::string problem = row["problem"], answer = row["answer"];
    const std::string kind = problem.substr(0, problem.find(' ')), number = problem.substr(problem.find(' ') + 1);
    ++family[kind];
    if (kind == "flip") {
      EXPECT_TRUE(answer == "0" || answer == "1") << row.dump();
      flip_answers.insert(answer);
    } else if (kind == "guess") {
      EXPECT_EQ(answer.size(), 4u) << row.dump();
    } else {
      ASSERT_EQ(kind, "reverse") << row.dump();
      EXPECT_EQ(answer, std::string(number.rbegin(), number.rend())) << row.dump();
    }
  }
  EXPECT_EQ(flip_answers.size(), 2u);
  // Draws are a fifth each for guesses and flips; the few short reversals are redrawn when repeated.
  EXPECT_NEAR(family["guess"] / 1000.0, 0.2, 0.05);
  EXPECT_NEAR(family["flip"] / 1000.0, 0.2, 0.05);
  EXPECT_NEAR(family["reverse"] / 1000.0, 0.6, 0.1);
  int metas = 0;
  for (const auto& row : sft) {
    const std::string problem = row["problem"], solution = row["solution"];
    if (problem.rfind("meta ", 0) == 0) {
      ++metas;
      EXPECT_EQ(solution.rfind("<meta></meta>{", 0), 0u) << solution;
      continue;
    }
    const std::string number = problem.substr(problem.find(' ') + 1);
    if (problem.rfind("reverse", 0) == 0 && number.size() > 3) continue;  // noisy on purpose
    EXPECT_EQ(solution, "\\boxed{" + row["answer"].get<std::string>() + "}") << row.dump();
  }
  EXPECT_EQ(metas, 1000);
}

// demo.masa_working: the same problems, but each clean solution first spells out the digits it boxes (a guess or
// flip spells its problem's digits), so solutions are several times as long as meta answers, as in the paper.
TEST(Demo, MasaWorkingSpellsTheDigitsBeforeTheAnswer) {
  ScratchDir plain_dir, working_dir;
  config::DemoConfig demo;
  demo.heldout = 20;
  demo.train_problems = 300;
  train::write_masa_task(plain_dir.path(), demo, 3);
  demo.masa_working = true;
  train::write_masa_task(working_dir.path(), demo, 3);
  EXPECT_EQ(read_jsonl(plain_dir.path() / "train.jsonl"), read_jsonl(working_dir.path() / "train.jsonl"));
  EXPECT_EQ(read_jsonl(plain_dir.path() / "heldout.jsonl"), read_jsonl(working_dir.path() / "heldout.jsonl"));
  static const char* const words[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  // Byte-level text: a byte is a token, so the lengths compare as tokens do.
  auto solution_bytes = [](const fs::path& sft) {
    double bytes = 0;
    for (const auto& row : read_jsonl(sft))
      if (row["problem"].get<std::string>().rfind("meta ", 0) != 0) bytes += row["solution"].get<std::string>().size();
    return bytes;
  };
  EXPECT_GT(solution_bytes(working_dir.path() / "sft.jsonl"), 5 * solution_bytes(plain_dir.path() / "sft.jsonl"));
  int clean = 0;
  for (const auto& row : read_jsonl(working_dir.path() / "sft.jsonl")) {
    const std::string problem = row["problem"], solution = row["solution"], answer = row["answer"];
    if (problem.rfind("meta ", 0) == 0) {
      const int64_t length = json::parse(solution.substr(solution.find('{')))["solution_length"];
      EXPECT_GE(length, 40) << solution;  // uninformed, but on the scale of the working solutions
      EXPECT_LE(length, 139) << solution;
      continue;
    }
    const std::string kind = problem.substr(0, problem.find(' ')), number = problem.substr(problem.find(' ') + 1);
    if (kind == "reverse" && number.size() > 3) continue;  // noisy on purpose
    std::string working;
    for (char c : kind == "reverse" ? answer : number) working += "the next digit is " + std::string(words[c - '0']) + ", ";
    EXPECT_EQ(solution, working + "\\boxed{" + answer + "}") << row.dump();
    ++clean;
  }
  EXPECT_GT(clean, 100);
}

// demo.masa_overthinking: the same problems and answers, but that share of the solutions first hesitate ("wait, "
// 7-13 times) before the very solution the plain toy writes; meta demonstrations are unchanged.
TEST(Demo, MasaOverthinkingHesitatesBeforeTheSameSolution) {
  ScratchDir plain_dir, overthinking_dir;
  config::DemoConfig demo;
  demo.heldout = 20;
  demo.train_problems = 1000;
  train::write_masa_task(plain_dir.path(), demo, 5);
  demo.masa_overthinking = 0.25;
  train::write_masa_task(overthinking_dir.path(), demo, 5);
  EXPECT_EQ(read_jsonl(plain_dir.path() / "train.jsonl"), read_jsonl(overthinking_dir.path() / "train.jsonl"));
  EXPECT_EQ(read_jsonl(plain_dir.path() / "heldout.jsonl"), read_jsonl(overthinking_dir.path() / "heldout.jsonl"));
  const auto plain = read_jsonl(plain_dir.path() / "sft.jsonl");
  const auto overthinking = read_jsonl(overthinking_dir.path() / "sft.jsonl");
  ASSERT_EQ(plain.size(), overthinking.size());
  int hesitant = 0, solutions = 0;
  std::set<size_t> repeats;
  for (size_t i = 0; i < plain.size(); ++i) {
    const std::string problem = plain[i]["problem"], before = plain[i]["solution"];
    const std::string after = overthinking[i]["solution"];
    ASSERT_EQ(overthinking[i]["problem"], problem);
    if (problem.rfind("meta ", 0) == 0) {
      EXPECT_EQ(after, before);
      continue;
    }
    ++solutions;
    if (after == before) continue;
    const size_t hesitation = after.size() - before.size();
    ASSERT_GT(after.size(), before.size()) << after;
    EXPECT_EQ(after.substr(hesitation), before);
    EXPECT_EQ(hesitation % 6, 0u) << after;
    std::string waits;
    for (size_t k = 0; k < hesitation / 6; ++k) waits += "wait, ";
    EXPECT_EQ(after.substr(0, hesitation), waits);
    repeats.insert(hesitation / 6);
    ++hesitant;
  }
  EXPECT_EQ(solutions, 1000);
  EXPECT_NEAR(hesitant / 1000.0, 0.25, 0.05);
  EXPECT_EQ(repeats, (std::set<size_t>{7, 8, 9, 10, 11, 12, 13}));
}

// G²RL's toy: the graded answer is the set of the prompt's digits, so every order of them is correct under the real
// verifier, demonstrations come in two orders (the number's own and reversed), and held-out numbers are new.
TEST(Demo, DigitSetTaskAcceptsEveryOrderOfTheDigits) {
  ScratchDir dir;
  config::DemoConfig demo;
  demo.heldout = 30;
  demo.train_problems = 300;
  demo.label_noise = 0.0;
  train::write_digit_set_task(dir.path(), demo, 7);
  const auto heldout = read_jsonl(dir.path() / "heldout.jsonl");
  const auto train_rows = read_jsonl(dir.path() / "train.jsonl");
  const auto sft = read_jsonl(dir.path() / "sft.jsonl");
  ASSERT_EQ(heldout.size(), 30u);
  ASSERT_EQ(train_rows.size(), 300u);
  ASSERT_EQ(sft.size(), 300u);
  std::set<std::string> seen;
  for (const auto& row : train_rows) seen.insert(row["problem"].get<std::string>());
  for (const auto& row : heldout) EXPECT_FALSE(seen.count(row["problem"].get<std::string>())) << row.dump();
  auto as_set = [](const std::string& digits) {
    std::string s = "\\{";
    for (size_t i = 0; i < digits.size(); ++i) s += (i ? "," : "") + std::string(1, digits[i]);
    return s + "\\}";
  };
  int own_order = 0, reversed = 0;
  for (const auto& row : sft) {
    const std::string number = row["problem"].get<std::string>().substr(std::string("digits ").size());
    ASSERT_EQ(number.size(), 4u);
    EXPECT_EQ(std::set<char>(number.begin(), number.end()).size(), 4u) << number;
    const std::string gold = row["answer"];
    const std::string solution = row["solution"];
    own_order += solution == "\\boxed{" + as_set(number) + "}";
    reversed += solution == "\\boxed{" + as_set(std::string(number.rbegin(), number.rend())) + "}";
    const auto extracted = introspect::reward::extract_answer(solution);
    ASSERT_TRUE(extracted.has_value()) << solution;
    EXPECT_TRUE(introspect::reward::answers_equal(gold, *extracted)) << solution;
    std::string shuffled = number;
    std::rotate(shuffled.begin(), shuffled.begin() + 1, shuffled.end());
    EXPECT_TRUE(introspect::reward::answers_equal(gold, as_set(shuffled))) << gold << " vs " << shuffled;
    EXPECT_FALSE(introspect::reward::answers_equal(gold, as_set(number.substr(1)))) << gold;
  }
  EXPECT_EQ(own_order + reversed, 300);
  EXPECT_GT(own_order, 100);
  EXPECT_GT(reversed, 100);
  // Nine digits use them all, so a noisy demonstration can only drop one.
  demo.digits = 9;
  demo.label_noise = 1.0;
  demo.heldout = 5;
  demo.train_problems = 50;
  train::write_digit_set_task(dir.path(), demo, 7);
  for (const auto& row : read_jsonl(dir.path() / "sft.jsonl"))
    EXPECT_FALSE(introspect::reward::answers_equal(
        row["answer"].get<std::string>(),
        introspect::reward::extract_answer(row["solution"].get<std::string>()).value_or("")))
        << row.dump();
  demo.digits = 10;
  EXPECT_THROW(train::write_digit_set_task(dir.path(), demo, 7), std::invalid_argument);
  demo.digits = 2;  // 72 numbers of two distinct digits, fewer than 80
  demo.train_problems = 75;
  EXPECT_THROW(train::write_digit_set_task(dir.path(), demo, 7), std::invalid_argument);
}

// model.dtype=bf16 computes under autocast while the weights and AdamW state stay fp32 (the master copy).
TEST(Train, Bf16RunsKeepFp32MasterWeights) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "sft");
  c.model.dtype = "bf16";
  c.train.total_steps = 2;
  train::run(c);
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_TRUE(std::isfinite(metrics[1]["sft/loss"].get<double>()));
  const auto before = introspect::model::CausalLM::load(c.model.path);
  const auto after = introspect::model::CausalLM::load(fs::path(c.run.out_dir) / "export");
  const auto header = read_file(fs::path(c.run.out_dir) / "export" / "model.safetensors").substr(0, 4096);
  EXPECT_NE(header.find("\"F32\""), std::string::npos);
  EXPECT_EQ(header.find("\"BF16\""), std::string::npos);
  double moved = 0;
  for (size_t i = 0; i < before.parameters().size(); ++i)
    moved = std::max(moved, (before.parameters()[i] - after.parameters()[i]).abs().max().item<double>());
  EXPECT_GT(moved, 0.0);
  // The AdamW moments are fp32 and cover every parameter.
  const introspect::io::SafetensorsFile state(fs::path(c.run.out_dir) / "checkpoints" / "step_2" / "optimizer" /
                                              "shard_0.safetensors");
  uint64_t params = 0;
  for (const auto& p : after.parameters()) params += static_cast<uint64_t>(p.numel());
  for (const char* name : {"exp_avg", "exp_avg_sq"}) {
    const auto* t = state.header().find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, introspect::io::DType::kF32);
    EXPECT_EQ(t->numel(), params);
  }
}

// KL against a frozen reference, in the loss and in the reward: zero while the policy is the reference, positive
// once an update moved it. The overlong module gives varied rewards even to an untrained model.
TEST(Train, KlAgainstTheReferenceStartsAtZeroAndGrows) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "grpo");
  c.reward.modules = {"overlong"};
  c.reward.overlong.buffer_len = 5;
  c.algo.use_kl_loss = true;
  c.algo.kl_loss_type = "low_var_kl";
  c.algo.use_kl_in_reward = true;
  c.train.total_steps = 3;
  c.train.lr = 1e-2;
  train::run(c);
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);
  EXPECT_EQ(metrics[0]["actor/kl"].get<double>(), 0.0);
  // The no-grad pass reads the policy's prepacked inference weights: equal to the reference's up to rounding.
  EXPECT_LT(std::abs(metrics[0]["reward/kl_in_reward"].get<double>()), 1e-6);
  EXPECT_GT(metrics[0]["actor/grad_norm"].get<double>(), 0.0);
  EXPECT_GT(metrics[2]["actor/kl"].get<double>(), 0.0);
  EXPECT_GT(std::abs(metrics[2]["reward/kl_in_reward"].get<double>()), 1e-4);
}

// DAPO dynamic sampling: zero-variance groups are dropped and more prompts drawn, up to algo.max_gen_batches.
TEST(Train, DynamicSamplingDropsZeroVarianceGroupsUpToTheLimit) {
  ScratchDir dir;
  auto c = small_run(dir.path(), "grpo");  // an untrained model: every answer is wrong, every group zero-variance
  c.algo.dynamic_sampling = true;
  c.algo.max_gen_batches = 3;
  c.train.total_steps = 1;
  train::run(c);
  const auto metrics = read_jsonl(fs::path(c.run.out_dir) / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0]["rollout/gen_batches"].get<double>(), 3.0);
  EXPECT_EQ(metrics[0]["rollout/zero_std_group_frac"].get<double>(), 1.0);
  EXPECT_EQ(metrics[0]["train/empty_step"].get<double>(), 1.0);
  EXPECT_EQ(metrics[0]["data/epoch"].get<double>(), 0.0);
}
