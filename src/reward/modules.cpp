// The in-process reward modules: math (answer correctness), format (a PCRE2 full match) and overlong (DAPO's soft
// length penalty).
#include "modules.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "introspect/reward/math_verifier.h"

namespace introspect::reward {
namespace {

// Runs fn(i) for i in [0, n) on up to `threads` threads; rethrows the first exception after all have stopped.
template <class Fn>
void parallel_for(size_t n, size_t threads, Fn&& fn) {
  threads = std::max<size_t>(1, std::min(threads, n));
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto run = [&] {
    for (size_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = n;  // the batch fails as a whole; stop taking work
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

Scores zero_scores(const std::vector<Group>& groups) {
  Scores s;
  s.rewards.reserve(groups.size());
  for (const auto& g : groups) s.rewards.emplace_back(g.responses.size(), 0.0);
  return s;
}

size_t response_count(const std::vector<Group>& groups) {
  size_t n = 0;
  for (const auto& g : groups) n += g.responses.size();
  return n;
}

// ---- math -------------------------------------------------------------------------------------------------

class MathModule final : public RewardModule {
 public:
  explicit MathModule(const config::MathRewardConfig& config) : config_(config) {
    options_.mode = config.extract;
    options_.ignore_think = config.ignore_think;
  }
  std::string_view name() const override { return "math"; }
  bool grades_answers() const override { return true; }

  Scores score(const std::vector<Group>& groups) override {
    Scores s = zero_scores(groups);
    s.correct.resize(groups.size());
    std::vector<std::pair<size_t, size_t>> items;  // (group, response)
    for (size_t g = 0; g < groups.size(); ++g) {
      s.correct[g].assign(groups[g].responses.size(), false);
      for (size_t r = 0; r < groups[g].responses.size(); ++r) items.emplace_back(g, r);
    }
    // vector<bool> packs bits, so threads write verdicts into a byte per item and copy them back after.
    std::vector<char> verdict(items.size(), 0), answered(items.size(), 0);
    // The symbolic checks can take milliseconds each; a few threads keep a 512-response batch short.
    const size_t threads = std::min<size_t>(8, std::max(1u, std::thread::hardware_concurrency()));
    parallel_for(items.size(), threads, [&](size_t i) {
      const auto& [g, r] = items[i];
      const auto answer = extract_answer(groups[g].responses[r].text, options_);
      if (!answer) return;
      answered[i] = 1;
      verdict[i] = answers_equal(groups[g].ground_truth, *answer, config_.timeout_s) ? 1 : 0;
    });
    size_t n_correct = 0, n_answered = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& [g, r] = items[i];
      s.correct[g][r] = verdict[i] != 0;
      s.rewards[g][r] = verdict[i] ? config_.correct : config_.incorrect;
      n_correct += verdict[i] != 0;
      n_answered += answered[i] != 0;
    }
    const double n = std::max<double>(1, static_cast<double>(items.size()));
    s.metrics["accuracy"] = static_cast<double>(n_correct) / n;
    s.metrics["no_answer_rate"] = static_cast<double>(items.size() - n_answered) / n;
    return s;
  }

 private:
  config::MathRewardConfig config_;
  ExtractOptions options_;
};

// ---- format -----------------------------------------------------------------------------------------------

class FormatModule final : public RewardModule {
 public:
  explicit FormatModule(const config::FormatRewardConfig& config) : config_(config) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // Anchored at both ends at compile time: a full match, and JIT still applies (match-time anchoring disables it).
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(config.pattern.data()), config.pattern.size(),
                          PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw std::invalid_argument("reward.format.pattern: bad PCRE2 pattern: " +
                                  std::string(reinterpret_cast<const char*>(message)) + " at offset " +
                                  std::to_string(offset) + " of `" + config.pattern + "`");
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  }
  ~FormatModule() override { pcre2_code_free(code_); }
  FormatModule(const FormatModule&) = delete;
  FormatModule& operator=(const FormatModule&) = delete;

  std::string_view name() const override { return "format"; }
  bool is_count_metric(std::string_view metric) const override { return metric == "match_errors"; }

  Scores score(const std::vector<Group>& groups) override {
    Scores s = zero_scores(groups);
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    if (!data) throw std::bad_alloc();
    size_t matched = 0, errors = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t r = 0; r < groups[g].responses.size(); ++r) {
        const std::string& text = groups[g].responses[r].text;
        const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, data, nullptr);
        // Besides no match, PCRE2 can fail on invalid UTF-8 or on its backtracking limit: both count as unmatched,
        // and are counted so a pathological pattern shows up in the metrics.
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) ++errors;
        matched += rc >= 0;
        s.rewards[g][r] = rc >= 0 ? config_.matched : config_.unmatched;
      }
    }
    pcre2_match_data_free(data);
    const double n = std::max<double>(1, static_cast<double>(response_count(groups)));
    s.metrics["match_rate"] = static_cast<double>(matched) / n;
    s.metrics["match_errors"] = static_cast<double>(errors);
    return s;
  }

 private:
  config::FormatRewardConfig config_;
  pcre2_code* code_ = nullptr;
};

// ---- overlong ---------------------------------------------------------------------------------------------

// DAPO's soft overlong punishment as verl computes it (verl/workers/reward_manager/dapo.py):
//   expected = max_new_tokens - buffer_len
//   penalty  = min(-(len - expected) / buffer_len * penalty_factor, 0)
// TRL's get_soft_overlong_punishment (trl/rewards/other_rewards.py) differs in two ways: it has no penalty_factor
// (always 1), and above max_new_tokens it is a flat -1, where verl keeps falling linearly below -penalty_factor.
// Both agree for penalty_factor = 1 and len <= max_new_tokens, the only lengths generation produces here.
class OverlongModule final : public RewardModule {
 public:
  explicit OverlongModule(const config::OverlongRewardConfig& config) : config_(config) {
    if (config.buffer_len < 1) throw std::invalid_argument("reward.overlong.buffer_len: must be at least 1");
    if (!(config.penalty_factor >= 0)) throw std::invalid_argument("reward.overlong.penalty_factor: must be >= 0");
  }
  std::string_view name() const override { return "overlong"; }

  Scores score(const std::vector<Group>& groups) override {
    Scores s = zero_scores(groups);
    size_t penalized = 0;
    double penalty_sum = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const int64_t max_new_tokens = groups[g].max_new_tokens;
      if (max_new_tokens <= 0) {
        throw std::invalid_argument("reward.overlong: the group has no max_new_tokens to measure length against");
      }
      if (config_.buffer_len > max_new_tokens) {
        throw std::invalid_argument("reward.overlong.buffer_len (" + std::to_string(config_.buffer_len) +
                                    ") exceeds the generation limit max_new_tokens (" +
                                    std::to_string(max_new_tokens) + ")");
      }
      const int64_t expected = max_new_tokens - config_.buffer_len;
      for (size_t r = 0; r < groups[g].responses.size(); ++r) {
        const auto length = static_cast<int64_t>(groups[g].responses[r].ids.size());
        if (length <= expected) continue;  // also avoids verl's -0.0 at length == expected
        const double penalty = std::min(-static_cast<double>(length - expected) /
                                            static_cast<double>(config_.buffer_len) * config_.penalty_factor,
                                        0.0);
        s.rewards[g][r] = penalty;
        ++penalized;
        penalty_sum += penalty;
      }
    }
    const double n = std::max<double>(1, static_cast<double>(response_count(groups)));
    s.metrics["penalized_rate"] = static_cast<double>(penalized) / n;
    // The mean over penalized responses only (0 when none): the size of the penalty, apart from how often.
    s.metrics["mean_penalty"] = penalized ? penalty_sum / static_cast<double>(penalized) : 0.0;
    return s;
  }

 private:
  config::OverlongRewardConfig config_;
};

}  // namespace

std::unique_ptr<RewardModule> make_math_module(const config::MathRewardConfig& config) {
  if (!(config.timeout_s > 0)) throw std::invalid_argument("reward.math.timeout_s: must be above 0");
  return std::make_unique<MathModule>(config);
}
std::unique_ptr<RewardModule> make_format_module(const config::FormatRewardConfig& config) {
  return std::make_unique<FormatModule>(config);
}
std::unique_ptr<RewardModule> make_overlong_module(const config::OverlongRewardConfig& config) {
  return std::make_unique<OverlongModule>(config);
}

}  // namespace introspect::reward
