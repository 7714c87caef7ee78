// The reward module registry and RewardSet, the weighted sum that keeps training going when a module throws.
#include "introspect/reward/reward.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <set>
#include <stdexcept>

#include "introspect/config/schema.h"
#include "introspect/io/log.h"
#include "modules.h"

namespace introspect::reward {
namespace {

struct Registration {
  const char* name;
  std::function<std::unique_ptr<RewardModule>(const config::RewardConfig&)> make;
  std::function<double(const config::RewardConfig&)> weight;
};

const std::vector<Registration>& registry() {
  static const std::vector<Registration> modules = {
      {"math", [](const config::RewardConfig& c) { return make_math_module(c.math); },
       [](const config::RewardConfig& c) { return c.math.weight; }},
      {"format", [](const config::RewardConfig& c) { return make_format_module(c.format); },
       [](const config::RewardConfig& c) { return c.format.weight; }},
      {"overlong", [](const config::RewardConfig& c) { return make_overlong_module(c.overlong); },
       [](const config::RewardConfig& c) { return c.overlong.weight; }},
      {"external", [](const config::RewardConfig& c) { return make_external_module(c.external); },
       [](const config::RewardConfig& c) { return c.external.weight; }},
  };
  return modules;
}

const Registration& find_registration(const std::string& name) {
  for (const auto& r : registry()) {
    if (name == r.name) return r;
  }
  std::string valid;
  for (const auto& n : reward_module_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("reward.modules: unknown reward module `" + name + "`; valid modules: " + valid);
}

std::vector<WeightedModule> build_modules(const config::RewardConfig& config) {
  if (config.modules.empty()) {
    std::string valid;
    for (const auto& n : reward_module_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw std::invalid_argument("reward.modules: empty; list at least one of: " + valid);
  }
  std::vector<WeightedModule> modules;
  std::set<std::string> seen;
  for (const auto& name : config.modules) {
    const Registration& r = find_registration(name);
    if (!seen.insert(name).second) throw std::invalid_argument("reward.modules: `" + name + "` is listed twice");
    modules.push_back({r.make(config), r.weight(config)});
  }
  return modules;
}

std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

// Throws when a module's answer does not fit the groups, so a buggy module is counted like a throwing one
// instead of corrupting the sum.
// `first_group` numbers the groups in messages when `groups` is a slice of the batch.
void check_scores(const Scores& s, const std::vector<Group>& groups, bool grades_answers, size_t first_group = 0) {
  if (s.rewards.size() != groups.size()) {
    throw std::logic_error("returned rewards for " + std::to_string(s.rewards.size()) + " groups, not " +
                           std::to_string(groups.size()));
  }
  if (grades_answers && s.correct.size() != groups.size()) {
    throw std::logic_error("returned verdicts for " + std::to_string(s.correct.size()) + " groups, not " +
                           std::to_string(groups.size()));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    if (s.rewards[g].size() != groups[g].responses.size() ||
        (grades_answers && s.correct[g].size() != groups[g].responses.size())) {
      throw std::logic_error("group " + std::to_string(first_group + g) + " has " +
                             std::to_string(groups[g].responses.size()) + " responses but got " +
                             std::to_string(s.rewards[g].size()) + " rewards");
    }
    for (size_t r = 0; r < s.rewards[g].size(); ++r) {
      if (!std::isfinite(s.rewards[g][r])) {
        throw std::logic_error("non-finite reward for group " + std::to_string(first_group + g) + " response " +
                               std::to_string(r));
      }
    }
  }
}

struct ModuleRun {
  Scores scores;  // the module's own metrics, unprefixed
  int64_t errors = 0;
};

Scores failed_group_scores(const Group& group) {
  Scores s;
  s.rewards.emplace_back(group.responses.size(), 0.0);
  s.correct.emplace_back(group.responses.size(), false);
  return s;
}

// Scores the batch in one call; if that throws, group by group, so only the failing groups score 0.
ModuleRun run_module(RewardModule& module, const std::vector<Group>& groups) {
  const bool grades = module.grades_answers();
  const std::string name(module.name());
  std::exception_ptr batch_failure;
  try {
    ModuleRun run{module.score(groups), 0};
    check_scores(run.scores, groups, grades);
    return run;
  } catch (...) {
    batch_failure = std::current_exception();
  }
  ModuleRun run;
  run.scores.rewards.resize(groups.size());
  if (grades) run.scores.correct.resize(groups.size());
  if (groups.size() == 1) {
    log::warn("reward module `", name, "` failed on a group; it scores 0 from this module: ",
              message_of(batch_failure));
    Scores failed = failed_group_scores(groups[0]);
    run.scores.rewards[0] = failed.rewards[0];
    if (grades) run.scores.correct[0] = failed.correct[0];
    run.errors = 1;
    return run;
  }
  log::warn("reward module `", name, "` failed on a batch of ", groups.size(),
            " groups; scoring them one by one: ", message_of(batch_failure));
  // Means and rates are re-averaged over the responses of the groups that scored; counts add up.
  std::map<std::string, double> sums;
  double scored_responses = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<Group> one{groups[g]};
    Scores s;
    bool scored = true;
    try {
      s = module.score(one);
      check_scores(s, one, grades, g);
    } catch (...) {
      log::warn("reward module `", name, "` failed on group ", g, "; it scores 0 from this module: ",
                message_of(std::current_exception()));
      ++run.errors;
      s = failed_group_scores(groups[g]);
      scored = false;
    }
    run.scores.rewards[g] = std::move(s.rewards[0]);
    if (grades) run.scores.correct[g] = std::move(s.correct[0]);
    if (!scored) continue;
    const auto n = static_cast<double>(groups[g].responses.size());
    scored_responses += n;
    for (const auto& [key, value] : s.metrics) sums[key] += module.is_count_metric(key) ? value : value * n;
  }
  for (const auto& [key, sum] : sums) {
    run.scores.metrics[key] = module.is_count_metric(key) ? sum : (scored_responses > 0 ? sum / scored_responses : 0);
  }
  return run;
}

}  // namespace

std::vector<std::string> reward_module_names() {
  std::vector<std::string> names;
  for (const auto& r : registry()) names.emplace_back(r.name);
  return names;
}

std::unique_ptr<RewardModule> make_reward_module(const std::string& name, const config::RewardConfig& config) {
  return find_registration(name).make(config);
}

RewardSet::RewardSet(const config::RewardConfig& config) : RewardSet(build_modules(config)) {}

RewardSet::RewardSet(std::vector<WeightedModule> modules) : entries_(std::move(modules)) {
  std::set<std::string, std::less<>> names;
  for (const auto& e : entries_) {
    if (!e.module) throw std::invalid_argument("RewardSet: null module");
    if (!names.emplace(e.module->name()).second) {
      throw std::invalid_argument("reward.modules: `" + std::string(e.module->name()) + "` is listed twice");
    }
    if (!std::isfinite(e.weight)) {
      throw std::invalid_argument("reward." + std::string(e.module->name()) + ".weight: must be finite");
    }
  }
}

Scores RewardSet::score(const std::vector<Group>& groups) {
  Scores total;
  size_t responses = 0;
  for (const auto& g : groups) {
    total.rewards.emplace_back(g.responses.size(), 0.0);
    responses += g.responses.size();
  }
  const double n = std::max<double>(1, static_cast<double>(responses));
  bool have_verdicts = false;
  for (auto& entry : entries_) {
    const auto start = std::chrono::steady_clock::now();
    ModuleRun run = run_module(*entry.module, groups);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string prefix = "reward/" + std::string(entry.module->name()) + "/";
    double sum = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t r = 0; r < total.rewards[g].size(); ++r) {
        sum += run.scores.rewards[g][r];
        total.rewards[g][r] += entry.weight * run.scores.rewards[g][r];
      }
    }
    for (const auto& [key, value] : run.scores.metrics) total.metrics[prefix + key] = value;
    // Set after the module's own metrics: these names are RewardSet's.
    total.metrics[prefix + "mean"] = sum / n;
    total.metrics[prefix + "errors"] = static_cast<double>(run.errors);
    total.metrics[prefix + "seconds"] = seconds;
    if (!have_verdicts && entry.module->grades_answers()) {
      total.correct = std::move(run.scores.correct);
      have_verdicts = true;
    }
  }
  double sum = 0;
  for (const auto& g : total.rewards) {
    for (double r : g) sum += r;
  }
  total.metrics["reward/mean"] = sum / n;
  return total;
}

}  // namespace introspect::reward
