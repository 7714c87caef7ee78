// MASA (../shared/research/masa.md): meta rollouts predict a prompt's pass rate, solution length and useful
// notions, and are rewarded by how well the predictions match the same step's solution rollouts. This file is
// the torch-free math: the meta prompt, parsing, the self-alignment reward, gating, cutoff and the expert-SFT
// target. The trainer (src/train/trainer.cpp) runs the rollouts around it.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "introspect/reward/reward.h"

namespace introspect::config {
struct MasaConfig;
}

namespace introspect::masa {

// The meta prompt's user message: the template with {problem}, {min_length} and {max_length} filled in.
std::string meta_user_message(std::string_view prompt_template, std::string_view problem, int64_t min_length,
                              int64_t max_length);

struct ParseOptions {
  bool strict = false;      // the official regex behaviour (spec 1.3)
  int64_t min_length = 128;  // tolerant mode clamps solution_length into [min_length, max_length]
  int64_t max_length = 8192;
};

struct MetaPrediction {
  bool parsed = false;                               // a JSON object was found and read
  std::optional<std::vector<std::string>> notions;   // math_notion
  std::optional<double> pass_rate;                   // p_hat = pass_rate / 8 (strict mode does not clamp)
  bool pass_rate_out_of_range = false;               // written outside 0..8 (then clamped, or raw in strict mode)
  std::optional<int64_t> length;                     // solution_length in tokens
  std::string reasoning;                             // the text inside the first <meta>...</meta>
};

// Tolerant (default): the last balanced JSON object after the last </meta> (or anywhere when there is none), keys
// in any order, numbers rounded (numeric strings accepted), pass_rate clamped to [0, 8] and solution_length to
// [min_length, max_length]. Strict: the last match of {"math_notion":[^}]*} read as JSON, or the unquoted-key
// fallback for math_notion only; a pass_rate or length that is not a JSON integer is missing.
MetaPrediction parse_meta(std::string_view text, const ParseOptions& options);

// The official code's crude de-pluralisation of a notion's last word ("formulas" -> "formula").
std::string singularize(std::string notion);

// Fraction of the (singularised, de-duplicated) notions not found in `excluded` that occur in more correct than
// incorrect solution texts; case-sensitive substring matching, presence counted once per text. 0 when empty.
double notion_score(const std::vector<std::string>& notions, std::string_view excluded,
                    const reward::SolutionEvidence& solutions);

struct RewardOptions {
  double difficulty_base = 0.01;  // b
  bool strict_length = false;     // l_min < l_hat < l_max (official code) instead of <=
};

struct MetaScore {
  double difficulty = 0, length = 0, notion = 0;
  double total() const { return (difficulty + length + notion) / 3.0; }
};

// r_meta of one prediction against its prompt's solution rollouts: a missing component scores 0 and the sum is
// always divided by 3.
MetaScore score_meta(const MetaPrediction& prediction, std::string_view excluded,
                     const reward::SolutionEvidence& solutions, const RewardOptions& options);

// Predictive gating of one prompt from its M predictions.
struct GateDecision {
  bool gated = false;
  bool predicted_solved = false;  // gated on "always solved" (mean 8/8) rather than "never solved"
  int64_t valid = 0;              // predictions with a pass rate the gate counts
  double mean = 0, std = 0;       // of the valid p_hat (population std)
};
// The spec's rule is "std < σ and mean is 0 or 1", which read literally makes the std test redundant. `rounded`
// (its recommended reading, the default) gates when the mean rounds to 0 or 8 of 8; `literal` only when every valid
// prediction is exactly 0 or exactly 8.
enum class GateRule { kRounded, kLiteral };
struct GateOptions {
  double sigma = 0.1;
  double min_valid_frac = 0.5;  // never gate unless this fraction of the predictions is valid
  GateRule rule = GateRule::kRounded;
  bool trust_out_of_range = false;  // a pass rate written outside 0..8 is valid for the gate (else: like unparseable)
};
GateDecision gate(const std::vector<MetaPrediction>& predictions, const GateOptions& options);
// The gate settings of a run (masa.gate_sigma, gate_min_valid_frac, gate_rule, gate_out_of_range).
GateOptions gate_options(const config::MasaConfig& config);

// The gate checking itself (masa.gate_min_precision; the spec trusts the predictor unconditionally [inferred]).
// Each side of the gate, "always solved" and "never solved", remembers its last `window` checked verdicts, true
// where the prompt really was zero-variance. A side is suspended while a quarter of its window or more is in and
// the share of true verdicts is below min_precision (0: never). The trainer solves the prompts a suspended side
// would gate, which checks it further, so a side that becomes right again comes back.
struct GateCheck {
  double min_precision = 0;
  int64_t window = 32;
  std::deque<bool> solved, unsolved;  // oldest first
  void add(bool solved_side, bool zero_variance);
  bool suspended(bool solved_side) const;
  std::optional<double> precision(bool solved_side) const;  // of the remembered verdicts; nullopt when none
};

// Early cutoff: ceil(scale x mean of the valid predicted lengths), clamped to [min_tokens, max_tokens];
// max_tokens when no prediction has a length or scale is 0.
int64_t cutoff_tokens(const std::vector<MetaPrediction>& predictions, double scale, int64_t min_tokens,
                      int64_t max_tokens);

// Notion feed-in: the solution prompt's user message with the hint sentence appended; unchanged without notions.
std::string with_notion_hint(std::string_view problem, const std::vector<std::string>& notions);

// Expert meta-SFT target (spec 3.5, recommended form): "<meta>reasoning</meta>\n" plus a compact JSON with the
// prediction's notions, the true pass rate round(8p) and the median (or midpoint) correct length. When no
// solution rollout is correct: nullopt, or with unsolved_length_range pass rate 0 and the prediction's own length
// clamped into that range (nullopt if it has none). The clamp matters under strict parsing, which keeps a predicted
// length as written.
std::optional<std::string> expert_target(const MetaPrediction& prediction, const reward::SolutionEvidence& solutions,
                                         bool midpoint_length,
                                         std::optional<std::pair<int64_t, int64_t>> unsolved_length_range = {});

// The `masa` reward module: scores meta groups (each must carry `solutions`). Metrics: the three components,
// parse and per-component valid rates, predicted and true pass rate and length, |p - p_hat|.
class MetaRewardModule final : public reward::RewardModule {
 public:
  // max_length: the solution rollouts' limit (rollout.max_new_tokens).
  MetaRewardModule(const config::MasaConfig& config, int64_t max_length);
  std::string_view name() const override { return "masa"; }
  reward::Scores score(const std::vector<reward::Group>& groups) override;

 private:
  ParseOptions parse_;
  RewardOptions reward_;
  bool exclude_meta_prompt_;
};

// The parse settings of a run (masa.strict_parse, masa.min_solution_length, the solution length limit).
ParseOptions parse_options(const config::MasaConfig& config, int64_t max_length);

}  // namespace introspect::masa
