// Data-parallel training under mpirun on CPU (OpenMPI): a 2-rank run over the same global batch ends with the
// same weights as one process, with and without ZeRO-1; a run resumes into another world size; and a rank
// that dies or stops mid-run ends the job with an error naming it, within the collective timeout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>
#include <sys/wait.h>

#include "introspect/config/config.h"
#include "introspect/io/safetensors.h"
#include "introspect/train/demo.h"
#include "test_util.h"

namespace fs = std::filesystem;
using introspect::testing::read_file;
using introspect::testing::read_jsonl;
using introspect::testing::run_command;
using introspect::testing::ScratchDir;
using introspect::testing::weight_difference;
using introspect::testing::WeightDiff;
namespace io = introspect::io;
namespace config = introspect::config;
namespace train = introspect::train;

namespace {

// OpenMPI refuses root without these (CI containers run as root); --bind-to none lets ranks share the cores.
const std::string kMpirun =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
    "mpirun --bind-to none -np ";

// A small GRPO run on the demo task and untrained model: 4 prompts x 4 samples a step, two PPO updates per step (mini-batches of 8
// sequences), micro-batches of 2, and a checkpoint every 2 steps.
fs::path write_run(const fs::path& dir) {
  config::DemoConfig demo;
  demo.heldout = 8;
  demo.train_problems = 64;
  train::write_demo_task(dir / "data", demo, 1);
  train::write_demo_model(dir / "model", 1);
  auto c = config::from_overrides({});
  c.model.path = (dir / "model").string();
  c.run.threads = 1;
  c.log.progress = "off";
  c.data.train_path = (dir / "data" / "train.jsonl").string();
  c.data.eval_path = (dir / "data" / "heldout.jsonl").string();
  c.data.chat_template = "custom";
  c.data.custom_chat_template = "{user}";
  c.rollout.n = 4;
  c.rollout.max_new_tokens = 8;
  c.train.prompts_per_step = 4;
  c.train.mini_batch_size = 8;
  c.train.micro_batch_size = 2;
  c.train.total_steps = 4;
  c.train.save_every = 2;
  c.train.eval_every = 2;
  c.train.eval_n = 2;
  c.train.lr = 1e-3;
  c.reward.math.extract = "boxed";
  // The untrained model is never right; a response holding a digit scores, so groups have spread to learn from.
  c.reward.modules = {"math", "format"};
  c.reward.format.pattern = "(?s).*[0-9].*";
  c.reward.format.weight = 1.0;
  c.dist.timeout_s = 60;
  config::save_yaml(c, dir / "run.yaml");
  return dir / "run.yaml";
}

std::string train_command(int ranks, const fs::path& cfg, const fs::path& out, const std::string& extra = "") {
  const std::string cmd = std::string(INTROSPECT_BINARY) + " train --config " + cfg.string() + " --out " +
                          out.string() + " " + extra;
  return ranks == 0 ? cmd : kMpirun + std::to_string(ranks) + " " + cmd;
}

WeightDiff compare_weights(const fs::path& a, const fs::path& b) {
  return weight_difference(a / "model.safetensors", b / "model.safetensors");
}

// The per-step reward means (SFT: losses): the rollouts themselves must agree, not only the weights.
std::vector<double> rewards(const fs::path& run) {
  std::vector<double> out;
  for (const auto& row : read_jsonl(run / "metrics.jsonl"))
    for (const char* k : {"reward/mean", "sft/loss"})
      if (row.contains(k)) out.push_back(row[k].get<double>());
  return out;
}

// fp32 sums taken in another order: a few ulps per step, amplified a little by AdamW's normalisation
// (measured: about 2e-7 after 4 steps, while training moves weights by about 8e-3).
constexpr double kWeightTolerance = 1e-5;

class DataParallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir;
    cfg_ = write_run(dir_->path());
    const auto r = run_command(train_command(0, cfg_, dir_->path() / "single"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path single() { return dir_->path() / "single"; }
  static inline ScratchDir* dir_ = nullptr;
  static inline fs::path cfg_;
};

void expect_same_run(const fs::path& run, const fs::path& reference) {
  SCOPED_TRACE(run.filename().string());
  const auto d = compare_weights(reference / "export", run / "export");
  EXPECT_GT(d.tensors, 5u);
  EXPECT_LT(d.max_abs, kWeightTolerance) << "largest weight difference " << d.max_abs;
  // The same rollouts and scores (G²RL's shaped rewards carry the forward's reduction order: within 1e-6).
  const auto got = rewards(run), want = rewards(reference);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "step " << i + 1;
  // ...and training moved the weights far more than that, so the comparison can fail.
  const auto moved = compare_weights(reference / "export", reference.parent_path() / "model");
  EXPECT_GT(moved.max_abs, 100 * kWeightTolerance);
  std::printf("max |w_dp - w_single| = %.3g over %zu tensors (training moved weights by up to %.3g)\n", d.max_abs,
              d.tensors, moved.max_abs);
}

}  // namespace

TEST_F(DataParallel, TwoRanksMatchOneProcess) {
  const auto out = dir_->path() / "np2";
  const auto r = run_command(train_command(2, cfg_, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_run(out, single());
  // Rank 0 alone wrote the run folder's files; the eval ran sharded and agrees too.
  EXPECT_TRUE(fs::exists(out / "checkpoints" / "step_4" / "DONE"));
  const auto a = read_jsonl(single() / "metrics.jsonl"), b = read_jsonl(out / "metrics.jsonl");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a.back()["eval/accuracy"], b.back()["eval/accuracy"]);
  EXPECT_NEAR(a.back()["response_length/mean"].get<double>(), b.back()["response_length/mean"].get<double>(), 1e-9);
}

TEST_F(DataParallel, ZeroOneMatchesOneProcessAndShardsTheState) {
  const auto out = dir_->path() / "np2_zero1";
  const auto r = run_command(train_command(2, cfg_, out, "dist.zero_stage=1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_run(out, single());
  const auto opt = out / "checkpoints" / "step_4" / "optimizer";
  ASSERT_TRUE(fs::exists(opt / "shard_0.safetensors"));
  ASSERT_TRUE(fs::exists(opt / "shard_1.safetensors"));
  const io::SafetensorsFile s0(opt / "shard_0.safetensors"), s1(opt / "shard_1.safetensors");
  const auto n0 = s0.header().find("exp_avg")->numel(), n1 = s1.header().find("exp_avg")->numel();
  const io::SafetensorsFile whole(single() / "checkpoints" / "step_4" / "optimizer" / "shard_0.safetensors");
  EXPECT_EQ(n0 + n1, whole.header().find("exp_avg")->numel());  // half the state each, together all of it
  EXPECT_LE(n1, n0);
}

TEST_F(DataParallel, ResumesIntoAnotherWorldSize) {
  // Two steps on 2 ranks with ZeRO-1, then the rest on 3 ranks (uneven shares, re-cut shards), and from the
  // same checkpoint on one process without ZeRO: both end where the uninterrupted run ends.
  const auto first = dir_->path() / "resume_np2";
  auto r = run_command(train_command(2, cfg_, first, "dist.zero_stage=1 train.total_steps=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& [ranks, zero, name] : {std::tuple{3, 1, "np3"}, std::tuple{0, 0, "np1"}}) {
    const auto out = dir_->path() / (std::string("resume_") + name);
    fs::copy(first, out, fs::copy_options::recursive);
    fs::remove_all(out / "export");
    r = run_command(train_command(ranks, cfg_, out, "--resume auto dist.zero_stage=" + std::to_string(zero)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    expect_same_run(out, single());
  }
}

namespace {

// A command running in the background in its own process group, its output going to a file.
class Background {
 public:
  Background(const std::string& command, const fs::path& log) {
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", (command + " > " + log.string() + " 2>&1").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Background() {
    if (pid_ > 0 && !exited_) kill(-pid_, SIGKILL), waitpid(pid_, nullptr, 0);
  }
  // The exit code once the command ends within `limit`, or nullopt.
  std::optional<int> wait_for(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

// The pid of MPI rank `rank` of the job whose command line mentions `marker` (found in /proc).
pid_t find_rank(const std::string& marker, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_file(e.path() / "cmdline"), environ = read_file(e.path() / "environ");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(marker) == std::string::npos || cmdline.find("mpirun") != std::string::npos) continue;
    size_t at = 0;
    for (size_t i = 0; i <= environ.size(); ++i) {
      if (i == environ.size() || environ[i] == '\0') {
        if (environ.compare(at, i - at, want) == 0) return static_cast<pid_t>(std::stoi(name));
        at = i + 1;
      }
    }
  }
  return -1;
}

bool wait_for_file(const fs::path& p, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (fs::exists(p)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

// One process and 2 ranks (with ZeRO-1) under the same extra settings end with the same weights.
void expect_parity(const fs::path& cfg, const fs::path& dir, const std::string& name, const std::string& settings) {
  const auto one = dir / (name + "_single"), two = dir / (name + "_np2");
  auto r = run_command(train_command(0, cfg, one, settings));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(train_command(2, cfg, two, settings + " dist.zero_stage=1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_run(two, one);
}

TEST_F(DataParallel, G2rlShapingMatchesOneProcess) {
  // G²RL's features and novelty stay within each group, so whole groups per rank give one process's rewards.
  expect_parity(cfg_, dir_->path(), "g2rl", "g2rl.enabled=true g2rl.zero_var_groups=shape");
}

TEST_F(DataParallel, DynamicSamplingMatchesOneProcess) {
  // Which groups are kept is decided on every group's spread over all ranks, round by round.
  expect_parity(cfg_, dir_->path(), "dynamic", "algo.dynamic_sampling=true algo.max_gen_batches=3");
  double extra_rounds = 0;
  for (const auto& row : read_jsonl(dir_->path() / "dynamic_np2" / "metrics.jsonl"))
    if (row.contains("rollout/gen_batches")) extra_rounds += row["rollout/gen_batches"].get<double>() - 1;
  EXPECT_GT(extra_rounds, 0);  // some step dropped zero-variance groups and drew more
}

TEST_F(DataParallel, SftMatchesOneProcess) {
  const auto sft = (dir_->path() / "data" / "sft.jsonl").string();
  expect_parity(cfg_, dir_->path(), "sft", "train.mode=sft data.response_field=solution data.train_path=" + sft);
}

// A 2-rank run of `cfg` into `out` whose rank 1 gets `signal` once checkpoint step_2 is complete (mid-run: the
// job has hundreds of steps to go). Returns how the job ended and when.
struct Signalled {
  std::optional<int> exit_code;  // nullopt: the job was still running after `limit`
  double seconds = 0;            // from the signal to the job's end
  std::string log;               // mpirun's output, every rank's stderr included
  pid_t victim = -1;
};

Signalled signal_rank_one(const fs::path& cfg, const fs::path& out, int signal, int timeout_s,
                          std::chrono::seconds limit) {
  Signalled s;
  const auto log = out.string() + ".log";
  Background job(train_command(2, cfg, out, "train.total_steps=500 train.eval_every=0 dist.timeout_s=" +
                                               std::to_string(timeout_s)),
                 log);
  if (!wait_for_file(out / "checkpoints" / "step_2" / "DONE", std::chrono::seconds(120))) return s;
  s.victim = find_rank(out.string(), 1);
  if (s.victim <= 0) return s;
  const auto t0 = std::chrono::steady_clock::now();
  kill(s.victim, signal);
  s.exit_code = job.wait_for(limit);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  kill(s.victim, SIGKILL);  // a stopped rank may outlive mpirun
  s.log = read_file(log);
  return s;
}

TEST_F(DataParallel, KilledRankEndsTheJobAndTheRunResumes) {
  const auto out = dir_->path() / "killed";
  const int timeout_s = 20;
  const auto s = signal_rank_one(cfg_, out, SIGKILL, timeout_s, std::chrono::seconds(timeout_s + 30));
  ASSERT_GT(s.victim, 0) << "rank 1 was not found running";
  ASSERT_TRUE(s.exit_code.has_value()) << "the surviving rank did not stop within dist.timeout_s";
  EXPECT_NE(*s.exit_code, 0) << s.log;
  EXPECT_LT(s.seconds, timeout_s + 5.0);
  const auto named = s.log.find("rank 1");  // mpirun or the survivor names the dead rank
  ASSERT_NE(named, std::string::npos) << s.log;
  std::printf("rank 1 killed: the job ended in %.1f s (exit %d): %s\n", s.seconds, *s.exit_code,
              s.log.substr(named > 80 ? named - 80 : 0, 200).c_str());

  // The last complete checkpoint resumes, on 2 ranks again, and runs two more steps.
  int64_t last = 0;
  for (const auto& e : fs::directory_iterator(out / "checkpoints"))
    if (fs::exists(e.path() / "DONE")) last = std::max<int64_t>(last, std::stoll(e.path().filename().string().substr(5)));
  ASSERT_GE(last, 2);
  const auto r = run_command(train_command(2, cfg_, out, "--resume auto train.eval_every=0 train.total_steps=" +
                                                             std::to_string(last + 2)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  const auto rows = read_jsonl(out / "metrics.jsonl");
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.back()["step"].get<int64_t>(), last + 2);
}

TEST_F(DataParallel, StoppedRankTimesOutWithAnErrorNamingIt) {
  // A rank that hangs (SIGSTOP) is not noticed by mpirun: the collective deadline must catch it.
  const int timeout_s = 5;
  const auto s = signal_rank_one(cfg_, dir_->path() / "stopped", SIGSTOP, timeout_s, std::chrono::seconds(timeout_s + 60));
  ASSERT_GT(s.victim, 0) << "rank 1 was not found running";
  ASSERT_TRUE(s.exit_code.has_value()) << "the job did not stop after its collective timeout";
  EXPECT_NE(*s.exit_code, 0) << s.log;
  EXPECT_GE(s.seconds, timeout_s - 1.0);
  EXPECT_LT(s.seconds, timeout_s + 30.0);
  EXPECT_NE(s.log.find("rank 1 (pid " + std::to_string(s.victim)), std::string::npos) << s.log;
  EXPECT_NE(s.log.find("is stopped"), std::string::npos) << s.log;
  EXPECT_NE(s.log.find("did not complete within dist.timeout_s=5"), std::string::npos) << s.log;
  const auto at = s.log.find("collective #");
  std::printf("rank 1 stopped: the job ended in %.1f s (exit %d): %s\n", s.seconds, *s.exit_code,
              s.log.substr(at == std::string::npos ? 0 : at, 400).c_str());
}

TEST_F(DataParallel, MultinodeLauncherRunsFromAHostfile) {
  // The hostfile form on one host: two slots on localhost.
  const auto hostfile = dir_->path() / "hostfile";
  std::ofstream(hostfile) << "# one line per host\nlocalhost slots=2\n";
  const auto out = dir_->path() / "launcher";
  const auto r = run_command("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_DEBUG=WARN INTROSPECT_BIN=" +
                             std::string(INTROSPECT_BINARY) + " " + INTROSPECT_SOURCE_DIR +
                             "/scripts/launch_multinode.sh " + hostfile.string() + " 2 " + cfg_.string() + " --out " +
                             out.string() + " train.total_steps=1 train.eval_every=0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("-x NCCL_DEBUG"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("data parallel over 2 ranks (mpi)"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out / "export" / "model.safetensors"));
}
