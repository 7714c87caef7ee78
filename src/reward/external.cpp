// The external reward module: a pool of user worker processes speaking JSON lines over pipes. Each worker thread
// owns one process and takes samples from a shared queue, so a slow or hanging sample holds up only its own
// worker, and only until its timeout; a worker that times out, dies or answers garbage is killed and restarted
// on its next sample, and the sample scores failure_score.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "introspect/io/log.h"
#include "modules.h"

extern char** environ;

namespace introspect::reward {
namespace {

using Clock = std::chrono::steady_clock;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "stopped";
}

std::string excerpt(std::string_view text, size_t limit = 200) {
  std::string s(text.substr(0, limit));
  if (text.size() > limit) s += "...";
  return s;
}

// Blocks SIGPIPE in the calling thread for its lifetime. A write to a worker that died then fails with EPIPE
// instead of killing the trainer, and the rest of the process keeps its own signal handling: SIGPIPE from a
// write is sent to the writing thread only.
class ThreadSigpipeBlock {
 public:
  ThreadSigpipeBlock() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
  }
  ~ThreadSigpipeBlock() {
    consume_pending();
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  // Takes back the SIGPIPE an EPIPE write left pending, so it cannot fire when the mask is restored.
  void consume_pending() {
    const timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) == SIGPIPE) {
    }
  }
  ThreadSigpipeBlock(const ThreadSigpipeBlock&) = delete;
  ThreadSigpipeBlock& operator=(const ThreadSigpipeBlock&) = delete;

 private:
  sigset_t set_;
  sigset_t previous_;
};

enum class Outcome { kOk, kTimeout, kCrash, kBadReply };

struct Reply {
  Outcome outcome = Outcome::kOk;
  double reward = 0;
  std::string detail;  // why it failed
};

// One worker process: its stdin and stdout pipes (ours ends non-blocking) and the unread part of its stdout.
class Worker {
 public:
  Worker() = default;
  ~Worker() { kill(); }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // Throws std::system_error when the command cannot be started.
  void start(const std::vector<std::string>& argv) {
    int to_child[2], from_child[2];
    // O_CLOEXEC: a worker must not inherit another worker's pipe ends, or closing that one's stdin would never
    // reach it as end of file.
    if (pipe2(to_child, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    if (pipe2(from_child, O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(to_child[0]);
      ::close(to_child[1]);
      throw std::system_error(e, std::generic_category(), "pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);  // no other descriptor of ours leaks
#endif
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    // Its own process group, so a kill also reaches what the worker started (a shell script's children); an
    // empty signal mask and default SIGPIPE, whatever the spawning thread had.
    sigset_t empty, defaults;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setpgroup(&attributes, 0);
    posix_spawnattr_setsigmask(&attributes, &empty);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, args[0], &actions, &attributes, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(to_child[0]);
    ::close(from_child[1]);
    if (rc != 0) {
      ::close(to_child[1]);
      ::close(from_child[0]);
      throw std::system_error(rc, std::generic_category(), "cannot start `" + argv[0] + "`");
    }
    pid_ = pid;
    stdin_ = to_child[1];
    stdout_ = from_child[0];
    fcntl(stdin_, F_SETFL, fcntl(stdin_, F_GETFL) | O_NONBLOCK);
    fcntl(stdout_, F_SETFL, fcntl(stdout_, F_GETFL) | O_NONBLOCK);
    buffer_.clear();
  }

  // Kills the worker's process group and reaps the worker; returns how it ended ("" if none was running).
  std::string kill() {
    close_pipes();
    if (pid_ <= 0) return "";
    ::kill(-pid_, SIGKILL);  // the group: pid_ is not reaped yet, so the id cannot have been reused
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return describe_status(status);
  }

  // Closes the worker's stdin (its cue to exit) and reaps it if it has already ended; true when it has.
  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  bool reap_if_exited() {
    if (pid_ <= 0) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    close_pipes();
    return true;
  }

  // Whether the worker wrote anything but whitespace that no request asked for.
  bool has_unsolicited_output() {
    drain();
    return buffer_.find_first_not_of(" \t\r\n") != std::string::npos;
  }

  // Sends one request line and reads one reply line, all before `deadline`.
  Reply request(const std::string& line, Clock::time_point deadline, ThreadSigpipeBlock& sigpipe) {
    size_t written = 0;
    while (written < line.size()) {
      const ssize_t n = ::write(stdin_, line.data() + written, line.size() - written);
      if (n > 0) {
        written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        const int ready = wait_for(stdin_, POLLOUT, deadline);
        if (ready == 0) return {Outcome::kTimeout, 0, "no reply"};
        continue;  // writable, or an error that the next write reports
      }
      const int e = errno;
      if (e == EPIPE) {
        sigpipe.consume_pending();
        return {Outcome::kCrash, 0, "closed its stdin"};
      }
      return {Outcome::kCrash, 0, std::string("write failed: ") + std::strerror(e)};
    }
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string reply = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (reply.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are not replies
        return parse_reply(reply);
      }
      const int ready = wait_for(stdout_, POLLIN, deadline);
      if (ready == 0) return {Outcome::kTimeout, 0, "no reply"};
      char chunk[4096];
      const ssize_t n = ::read(stdout_, chunk, sizeof chunk);
      if (n > 0) {
        buffer_.append(chunk, static_cast<size_t>(n));
      } else if (n == 0) {
        return {Outcome::kCrash, 0, "closed its stdout"};
      } else if (errno != EINTR && errno != EAGAIN) {
        return {Outcome::kCrash, 0, std::string("read failed: ") + std::strerror(errno)};
      }
    }
  }

 private:
  static Reply parse_reply(const std::string& line) {
    const auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) return {Outcome::kBadReply, 0, "reply is not JSON: `" + excerpt(line) + "`"};
    if (!json.is_object() || !json.contains("reward") || !json["reward"].is_number()) {
      return {Outcome::kBadReply, 0, "reply has no numeric \"reward\": `" + excerpt(line) + "`"};
    }
    const double reward = json["reward"].get<double>();
    if (!std::isfinite(reward)) return {Outcome::kBadReply, 0, "reward is not finite: `" + excerpt(line) + "`"};
    return {Outcome::kOk, reward, ""};
  }

  // poll() for `events` until the deadline: >0 ready (or an error/hangup the next call reports), 0 timed out.
  static int wait_for(int fd, short events, Clock::time_point deadline) {
    while (true) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return 0;
      pollfd p{fd, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
      if (rc < 0 && errno == EINTR) continue;
      return rc < 0 ? 1 : rc;
    }
  }

  void drain() {
    if (stdout_ < 0) return;
    char chunk[4096];
    ssize_t n;
    while ((n = ::read(stdout_, chunk, sizeof chunk)) > 0) buffer_.append(chunk, static_cast<size_t>(n));
  }

  void close_pipes() {
    close_stdin();
    if (stdout_ >= 0) ::close(stdout_);
    stdout_ = -1;
    buffer_.clear();
  }

  pid_t pid_ = -1;
  int stdin_ = -1;   // ours to write: the worker's stdin
  int stdout_ = -1;  // ours to read: the worker's stdout
  std::string buffer_;
};

class ExternalModule final : public RewardModule {
 public:
  explicit ExternalModule(const config::ExternalRewardConfig& config) : config_(config) {
    if (config.command.empty() || config.command[0].empty()) {
      throw std::invalid_argument(
          "reward.external.command: empty; give the worker's executable and its arguments, e.g. [python3, "
          "reward_worker.py]");
    }
    if (config.workers < 1) throw std::invalid_argument("reward.external.workers: must be at least 1");
    if (!(config.timeout_s > 0)) throw std::invalid_argument("reward.external.timeout_s: must be above 0");
    if (!std::isfinite(config.failure_score)) {
      throw std::invalid_argument("reward.external.failure_score: must be finite");
    }
    workers_.resize(static_cast<size_t>(config.workers));
    // Started now, so a command that cannot run is a config error rather than a stream of crashes, and the
    // workers' startup (imports) overlaps the first rollout instead of eating into the first samples' timeouts.
    for (auto& w : workers_) {
      w = std::make_unique<Worker>();
      try {
        w->start(config.command);
      } catch (const std::system_error& e) {
        throw std::invalid_argument("reward.external.command: " + std::string(e.what()));
      }
    }
  }

  // Closes every worker's stdin, gives them a moment to exit, then kills what is left.
  ~ExternalModule() override {
    for (auto& w : workers_) w->close_stdin();
    const auto deadline = Clock::now() + std::chrono::milliseconds(1000);
    while (Clock::now() < deadline) {
      bool all = true;
      for (auto& w : workers_) all = w->reap_if_exited() && all;
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (auto& w : workers_) w->kill();
  }

  std::string_view name() const override { return "external"; }
  bool is_count_metric(std::string_view metric) const override {
    return metric == "timeouts" || metric == "crashes" || metric == "bad_replies";
  }

  Scores score(const std::vector<Group>& groups) override {
    Scores s;
    std::vector<std::pair<size_t, size_t>> items;  // (group, response)
    std::vector<std::string> requests;
    for (size_t g = 0; g < groups.size(); ++g) {
      s.rewards.emplace_back(groups[g].responses.size(), config_.failure_score);
      for (size_t r = 0; r < groups[g].responses.size(); ++r) {
        const Response& response = groups[g].responses[r];
        nlohmann::json request = {{"prompt", groups[g].prompt},
                                  {"response", response.text},
                                  {"ground_truth", groups[g].ground_truth},
                                  {"metadata", groups[g].metadata},
                                  {"response_ids", response.ids},
                                  {"truncated", response.truncated}};
        // Invalid UTF-8 (a response cut inside a character) becomes U+FFFD rather than failing the batch.
        requests.push_back(request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        items.emplace_back(g, r);
      }
    }
    std::vector<double> rewards(items.size(), config_.failure_score);
    std::vector<char> answered(items.size(), 0);
    std::atomic<size_t> next{0};
    std::atomic<int64_t> timeouts{0}, crashes{0}, bad_replies{0};
    std::mutex first_failure_mutex;
    std::string first_failure;
    const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.timeout_s));

    auto note_failure = [&](const std::string& message) {
      log::debug("reward.external: ", message);
      std::lock_guard lock(first_failure_mutex);
      if (first_failure.empty()) first_failure = message;
    };
    auto run = [&](Worker& worker) {
      ThreadSigpipeBlock sigpipe;
      for (size_t i = next++; i < items.size(); i = next++) {
        const std::string where = "sample " + std::to_string(i) + " (group " + std::to_string(items[i].first) + ")";
        if (worker.running() && worker.reap_if_exited()) note_failure("worker exited between samples; restarting it");
        if (worker.running() && worker.has_unsolicited_output()) {
          // Output no request asked for would be read as the next reply: start over in step.
          worker.kill();
          note_failure("worker wrote lines no request asked for; restarted it");
        }
        if (!worker.running()) {
          try {
            worker.start(config_.command);
          } catch (const std::system_error& e) {
            ++crashes;
            note_failure(where + ": " + e.what());
            continue;
          }
        }
        const pid_t pid = worker.pid();
        const Reply reply = worker.request(requests[i], Clock::now() + timeout, sigpipe);
        switch (reply.outcome) {
          case Outcome::kOk:
            rewards[i] = reply.reward;
            answered[i] = 1;
            continue;
          case Outcome::kTimeout:
            ++timeouts;
            note_failure(where + ": worker " + std::to_string(pid) + " gave no reply within " +
                         log::concat(config_.timeout_s) + " s; killed it (" + worker.kill() + ")");
            continue;
          case Outcome::kCrash: {
            ++crashes;
            const std::string how = worker.kill();
            note_failure(where + ": worker " + std::to_string(pid) + " " + reply.detail + " (" + how + ")");
            continue;
          }
          case Outcome::kBadReply:
            ++bad_replies;
            worker.kill();
            note_failure(where + ": worker " + std::to_string(pid) + ": " + reply.detail + "; restarted it");
            continue;
        }
      }
    };
    const size_t threads = std::min(workers_.size(), items.size());
    std::vector<std::thread> pool;
    pool.reserve(threads);
    // Always on fresh threads, so blocking SIGPIPE never touches the caller's signal mask.
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(run, std::ref(*workers_[t]));
    for (auto& t : pool) t.join();

    double answered_sum = 0;
    size_t answered_count = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      s.rewards[items[i].first][items[i].second] = rewards[i];
      if (answered[i]) {
        answered_sum += rewards[i];
        ++answered_count;
      }
    }
    const int64_t failures = timeouts + crashes + bad_replies;
    if (failures > 0) {
      log::warn("reward.external: ", failures, " of ", items.size(), " samples scored failure_score (",
                timeouts.load(), " timeouts, ", crashes.load(), " crashes, ", bad_replies.load(),
                " bad replies); first: ", first_failure);
    } else if (!first_failure.empty()) {
      log::warn("reward.external: ", first_failure);
    }
    s.metrics["timeouts"] = static_cast<double>(timeouts);
    s.metrics["crashes"] = static_cast<double>(crashes);
    s.metrics["bad_replies"] = static_cast<double>(bad_replies);
    // The mean of what the workers answered; RewardSet's reward/external/mean also counts the failures.
    s.metrics["answered_mean"] = answered_count ? answered_sum / static_cast<double>(answered_count) : 0.0;
    return s;
  }

 private:
  config::ExternalRewardConfig config_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace

std::unique_ptr<RewardModule> make_external_module(const config::ExternalRewardConfig& config) {
  return std::make_unique<ExternalModule>(config);
}

}  // namespace introspect::reward
