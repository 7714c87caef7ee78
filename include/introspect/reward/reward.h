// Reward modules: each scores whole groups (all G responses to one prompt) so that group-aware rewards such as
// MASA and G²RL fit the same interface as a plain verifier. Modules are picked by name and combined with weights
// from the `reward` config section; the combination counts a module that throws and lets training go on.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace introspect::config {
struct RewardConfig;
}

namespace introspect::reward {

// One response, as the modules see it.
struct Response {
  std::string text;          // decoded with special tokens skipped
  std::vector<int32_t> ids;  // the response's token ids
  bool truncated = false;    // stopped by the length limit rather than EOS or a stop string
};

// The same prompt's solution rollouts of this step: what MASA's meta rollouts are judged against.
struct SolutionEvidence {
  std::string problem;              // the solution prompt's user message (notions inside it are excluded)
  std::vector<std::string> texts;   // decoded responses
  std::vector<int64_t> lengths;     // response tokens, EOS included
  std::vector<bool> correct;        // the verifier's verdicts
};

// All responses to one prompt.
struct Group {
  std::string prompt;        // the user message after the prompt template
  std::string ground_truth;  // the extracted answer
  nlohmann::json metadata;   // the dataset row as read (any extra fields), or null
  int64_t max_new_tokens = 0;  // the length limit the responses were generated under
  std::vector<Response> responses;
  std::shared_ptr<const SolutionEvidence> solutions;  // set for MASA meta groups only
};

struct Scores {
  std::vector<std::vector<double>> rewards;  // [group][response]
  std::map<std::string, double> metrics;     // named batch-level figures (means, rates, counts)
  // Answer verdicts [group][response] from a module that grades answers (math); empty otherwise. The trainer
  // reports accuracy and filters groups (DAPO dynamic sampling) on these, whatever the weights are.
  std::vector<std::vector<bool>> correct;
};

class RewardModule {
 public:
  virtual ~RewardModule() = default;
  virtual std::string_view name() const = 0;
  // Scores every response of every group; `rewards` must match the groups' shape. May throw: the caller counts it.
  // Not called concurrently on one module.
  virtual Scores score(const std::vector<Group>& groups) = 0;
  // Whether score() fills `correct` (answer grading); RewardSet takes the verdicts of the first such module.
  virtual bool grades_answers() const { return false; }
  // Whether a metric is a count, which adds up over groups scored one by one after a throw; other metrics are
  // means or rates, averaged over the responses of the groups that scored.
  virtual bool is_count_metric(std::string_view /*metric*/) const { return false; }
};

// Builds the module registered under `name`, with its parameters from the config. Throws std::invalid_argument
// naming unknown modules.
std::unique_ptr<RewardModule> make_reward_module(const std::string& name, const config::RewardConfig& config);
std::vector<std::string> reward_module_names();

struct WeightedModule {
  std::unique_ptr<RewardModule> module;
  double weight = 1.0;
};

// The weighted sum of the configured modules. Metrics come back as "reward/<module>/<metric>", plus each
// module's mean score ("reward/<module>/mean", unweighted), its wall time ("reward/<module>/seconds"), its error
// count ("reward/<module>/errors": groups whose scoring threw; they score 0 from that module and are graded
// wrong) and the mean total ("reward/mean"). A module that throws on a batch is retried group by group, so only
// the failing groups lose its score.
class RewardSet {
 public:
  // The modules of `reward.modules`, weighted by their sections' `weight`. Throws std::invalid_argument naming
  // the key on an unknown, repeated or missing module or on a module's bad parameters.
  explicit RewardSet(const config::RewardConfig& config);
  // Any modules (tests inject their own); names must be distinct.
  explicit RewardSet(std::vector<WeightedModule> modules);
  // Weighted total rewards; `correct` comes from the first configured module that grades answers.
  Scores score(const std::vector<Group>& groups);

 private:
  std::vector<WeightedModule> entries_;
};

}  // namespace introspect::reward
