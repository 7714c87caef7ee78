// The single config schema. Each struct is a YAML section: its members carry the defaults, and its
// visit method gives every field its key, one-line doc and valid range. docs/config.md is generated
// from this file (`introspect config docs`), and a test fails when the checked-in copy is stale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "introspect/config/visitor.h"

namespace introspect::config {

struct RunConfig {
  std::string name = "introspect";
  std::string out_dir = "runs/introspect";
  int64_t threads = 0;

  void visit(ConfigVisitor& v) {
    v.field("name", name, "Run name, used in logs and the run folder's metadata");
    v.field("out_dir", out_dir, "Run folder: resolved config, log file, metrics.jsonl, checkpoints");
    v.field("threads", threads, "CPU threads for LibTorch intra-op work; 0 means all cores", Range::at_least(0));
  }
};

struct LogConfig {
  std::string level = "info";
  std::string progress = "auto";
  double progress_interval_s = 30.0;

  void visit(ConfigVisitor& v) {
    v.choice("level", level, "Console and log-file verbosity", {"trace", "debug", "info", "warn", "error"});
    v.choice("progress", progress,
             "Progress display: auto redraws in place on a TTY and prints periodic lines when piped",
             {"auto", "bar", "lines", "off"});
    v.field("progress_interval_s", progress_interval_s, "Seconds between plain progress lines when output is piped",
            Range::above(0));
  }
};

struct ModelConfig {
  std::string path;
  std::string dtype = "fp32";
  bool activation_checkpointing = false;

  void visit(ConfigVisitor& v) {
    v.field("path", path, "Hugging Face checkpoint folder (config.json + *.safetensors)");
    v.choice("dtype", dtype, "Compute dtype of the policy; bf16 keeps fp32 master weights", {"fp32", "bf16"});
    v.field("activation_checkpointing", activation_checkpointing, "Recompute each decoder layer in the backward");
  }
};

struct DataConfig {
  std::string train_path;
  std::string eval_path;
  std::string prompt_field = "problem";
  std::string answer_field = "answer";
  std::string answer_extract = "none";
  std::string response_field = "solution";
  bool skip_malformed = false;
  std::string prompt_template = "{problem}";
  std::string system_prompt;
  std::string chat_template = "auto";
  std::string custom_chat_template;
  bool enable_thinking = true;
  int64_t max_prompt_tokens = 1024;
  bool shuffle = true;

  void visit(ConfigVisitor& v) {
    v.field("train_path", train_path, "Training set: JSONL or a JSON array of objects");
    v.field("eval_path", eval_path, "Held-out set, same format as train_path");
    v.field("prompt_field", prompt_field, "Field holding the problem text");
    v.field("answer_field", answer_field, "Field holding the ground-truth answer");
    v.choice("answer_extract", answer_extract,
             "How the answer is taken from its field: as is, the last \\boxed{} (e.g. a solution), or after GSM8K's ####",
             {"none", "boxed", "gsm8k"});
    v.field("response_field", response_field, "train.mode=sft: field holding the target response");
    v.field("skip_malformed", skip_malformed, "Skip and count malformed dataset rows instead of stopping at the first");
    v.field("prompt_template", prompt_template, "User message; {problem} is replaced by the prompt field");
    v.field("system_prompt", system_prompt, "System message; empty for none");
    v.choice("chat_template", chat_template,
             "Prompt format: auto recognises the checkpoint's tokenizer_config.json template; plain is for base models",
             {"auto", "qwen3", "llama3", "plain", "custom"});
    v.field("custom_chat_template", custom_chat_template,
            "With chat_template=custom: a string with {system} and {user} placeholders");
    v.field("enable_thinking", enable_thinking, "Qwen3: false ends the prompt with an empty <think></think> block");
    v.field("max_prompt_tokens", max_prompt_tokens, "Longer prompts are skipped and counted", Range::at_least(1));
    v.field("shuffle", shuffle, "Shuffle the training set each epoch (seeded by train.seed)");
  }
};

struct RolloutConfig {
  int64_t n = 8;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = -1;
  double min_p = 0.0;
  int64_t max_new_tokens = 1024;
  int64_t max_batch = 64;
  int64_t kv_budget_mb = 8192;
  int64_t seed = 0;
  std::vector<int64_t> stop_token_ids;
  std::vector<std::string> stop;

  void visit(ConfigVisitor& v) {
    v.field("n", n, "Samples per prompt (the GRPO group size G)", Range::at_least(1));
    v.field("temperature", temperature, "Sampling temperature; 0 means greedy", Range::at_least(0));
    v.field("top_p", top_p, "Nucleus sampling mass; 1 disables it", Range{0.0, 1.0, true, false});
    v.field("top_k", top_k, "Keep the k most likely tokens; -1 disables it", Range::at_least(-1));
    v.field("min_p", min_p, "Drop tokens below min_p times the top probability; 0 disables it", Range::unit());
    v.field("max_new_tokens", max_new_tokens, "Response length limit per sequence", Range::at_least(1));
    v.field("max_batch", max_batch, "KV-cache slots generated at once; never changes the outputs", Range::at_least(1));
    v.field("kv_budget_mb", kv_budget_mb, "Largest KV cache allowed, sized up front; 0 means no limit", Range::at_least(0));
    v.field("seed", seed, "Sampling seed; each sample's stream derives from (seed, prompt, sample)", Range::at_least(0));
    v.field("stop_token_ids", stop_token_ids, "Extra token ids that end a response (EOS always does)",
            Range::at_least(0));
    v.field("stop", stop, "Strings that end a response");
  }
};

struct AlgoConfig {
  std::string adv_estimator = "grpo";
  bool norm_adv_by_std = true;
  std::string std_mode = "unbiased";
  double adv_epsilon = 1e-6;
  double clip_ratio_low = 0.2;
  double clip_ratio_high = 0.2;
  double clip_ratio_c = 3.0;
  std::string loss_agg_mode = "token-mean";
  double entropy_coeff = 0.0;
  bool use_kl_loss = false;
  double kl_loss_coef = 0.001;
  std::string kl_loss_type = "low_var_kl";
  bool use_kl_in_reward = false;
  double kl_in_reward_coef = 0.001;
  std::string kl_in_reward_type = "k1";
  double loss_scale_factor = 0.0;
  bool epsilon_inside_sqrt = false;
  bool dynamic_sampling = false;
  int64_t max_gen_batches = 10;

  void visit(ConfigVisitor& v) {
    v.choice("adv_estimator", adv_estimator, "Advantage estimator", {"grpo", "drgrpo", "rloo"});
    v.field("norm_adv_by_std", norm_adv_by_std, "GRPO: divide by the group std (false gives Dr.GRPO)");
    v.choice("std_mode", std_mode, "Group std: unbiased (N-1, verl/TRL) or population (N)",
             {"unbiased", "population"});
    v.field("adv_epsilon", adv_epsilon, "Added to the group std before dividing (verl 1e-6, TRL 1e-4)",
            Range::at_least(0));
    v.field("epsilon_inside_sqrt", epsilon_inside_sqrt, "Divide by sqrt(var + adv_epsilon) instead of std + adv_epsilon");
    v.field("clip_ratio_low", clip_ratio_low, "PPO clip: ratio floor is 1 - clip_ratio_low", Range::closed(0, 1));
    v.field("clip_ratio_high", clip_ratio_high, "PPO clip: ratio ceiling is 1 + clip_ratio_high (DAPO uses 0.28)",
            Range::at_least(0));
    v.field("clip_ratio_c", clip_ratio_c, "Dual-clip bound for negative advantages", Range::above(1));
    v.choice("loss_agg_mode", loss_agg_mode, "How token losses are aggregated (verl's agg_loss)",
             {"token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"});
    v.field("entropy_coeff", entropy_coeff, "Entropy bonus weight", Range::at_least(0));
    v.field("use_kl_loss", use_kl_loss, "Add a KL penalty against a frozen reference copy of the policy");
    v.field("kl_loss_coef", kl_loss_coef, "KL penalty weight", Range::at_least(0));
    v.choice("kl_loss_type", kl_loss_type, "KL estimator of the loss; a trailing + takes k2's gradient",
             {"k1", "k2", "k3", "low_var_kl", "k1+", "k3+", "low_var_kl+"});
    v.field("use_kl_in_reward", use_kl_in_reward,
            "Subtract kl_in_reward_coef x KL(old policy || reference) from each token's reward (verl's in-reward KL)");
    v.field("kl_in_reward_coef", kl_in_reward_coef, "In-reward KL weight", Range::at_least(0));
    v.choice("kl_in_reward_type", kl_in_reward_type, "In-reward KL estimator", {"k1", "abs", "k2", "k3", "low_var_kl"});
    v.field("loss_scale_factor", loss_scale_factor,
            "seq-mean-token-sum-norm's constant divisor (Dr.GRPO); 0 uses rollout.max_new_tokens", Range::at_least(0));
    v.field("dynamic_sampling", dynamic_sampling,
            "DAPO: drop groups whose rewards are all equal and generate more prompts until the step is full");
    v.field("max_gen_batches", max_gen_batches, "Dynamic sampling: generation rounds per step at most; 0 means no limit",
            Range::at_least(0));
  }
};

struct TrainConfig {
  std::string mode = "grpo";
  int64_t total_steps = 100;
  int64_t prompts_per_step = 32;
  int64_t mini_batch_size = 256;
  int64_t micro_batch_size = 8;
  int64_t micro_batch_tokens = 0;
  int64_t ppo_epochs = 1;
  double lr = 1e-6;
  double weight_decay = 0.01;
  int64_t warmup_steps = 0;
  std::string lr_schedule = "constant";
  double grad_clip = 1.0;
  int64_t save_every = 50;
  int64_t keep_last = 3;
  int64_t seed = 1;
  bool deterministic = false;
  std::string old_logprob = "auto";
  int64_t max_nonfinite_steps = 3;
  int64_t eval_every = 0;
  int64_t eval_n = 4;
  int64_t eval_max_problems = 0;

  void visit(ConfigVisitor& v) {
    v.choice("mode", mode, "grpo (RL) or sft (cross-entropy on response tokens)", {"grpo", "sft"});
    v.field("total_steps", total_steps, "Training steps to run (each: generate, score, update)", Range::at_least(1));
    v.field("prompts_per_step", prompts_per_step,
            "Prompts sampled per step over all ranks (each rank takes every world_size-th group); sequences = "
            "prompts x rollout.n",
            Range::at_least(1));
    v.field("mini_batch_size", mini_batch_size, "Sequences per PPO update, over all ranks", Range::at_least(1));
    v.field("micro_batch_size", micro_batch_size,
            "Sequences per forward/backward on one rank (gradient accumulation)", Range::at_least(1));
    v.field("micro_batch_tokens", micro_batch_tokens,
            "When above 0, sort each batch's sequences by length and also cap each micro-batch at this many padded "
            "tokens (rows x its longest sequence), so short sequences (MASA's meta rollouts) are not padded to the "
            "longest; verl's use_dynamic_bsz. The gradient is unchanged. 0 keeps sequences in order",
            Range::at_least(0));
    v.field("ppo_epochs", ppo_epochs, "Passes over each step's rollouts", Range::at_least(1));
    v.field("lr", lr, "AdamW learning rate", Range::above(0));
    v.field("weight_decay", weight_decay, "AdamW decoupled weight decay", Range::at_least(0));
    v.field("warmup_steps", warmup_steps, "Training steps of linear warmup", Range::at_least(0));
    v.choice("lr_schedule", lr_schedule, "Schedule after warmup", {"constant", "cosine"});
    v.field("grad_clip", grad_clip, "Global gradient-norm clip; 0 disables it", Range::at_least(0));
    v.field("save_every", save_every, "Checkpoint every N steps; 0 saves only at the end", Range::at_least(0));
    v.field("keep_last", keep_last, "Checkpoints kept on disk", Range::at_least(1));
    v.field("seed", seed, "Seed for data order, sampling and init", Range::at_least(0));
    v.field("deterministic", deterministic, "Bit-identical reruns and resumes on CPU (deterministic algorithms only)");
    v.choice("old_logprob", old_logprob,
             "PPO's old log-probs: auto takes the update's own forward when there is a single on-policy update and "
             "recomputes otherwise; rollout reuses the sampler's",
             {"auto", "recompute", "rollout"});
    v.field("max_nonfinite_steps", max_nonfinite_steps,
            "A step with a NaN/inf loss or gradient is skipped; training stops after this many in a row",
            Range::at_least(1));
    v.field("eval_every", eval_every, "Evaluate on data.eval_path every N steps (and at the end); 0 disables it",
            Range::at_least(0));
    v.field("eval_n", eval_n, "Samples per held-out problem (accuracy is their mean)", Range::at_least(1));
    v.field("eval_max_problems", eval_max_problems, "Held-out problems used; 0 means all", Range::at_least(0));
  }
};

struct MathRewardConfig {
  double weight = 1.0;
  std::string extract = "auto";
  bool ignore_think = true;
  double correct = 1.0;
  double incorrect = 0.0;
  double timeout_s = 2.0;

  void visit(ConfigVisitor& v) {
    v.field("weight", weight, "Weight of this module in the total reward");
    v.choice("extract", extract,
             "Where the answer is read: auto tries the last \\boxed{}, then ####, then 'the answer is', then the final $...$",
             {"auto", "boxed", "gsm8k", "answer_is", "last_dollar"});
    v.field("ignore_think", ignore_think, "Read the answer only after the last </think>");
    v.field("correct", correct, "Score of a correct answer");
    v.field("incorrect", incorrect, "Score of a wrong or missing answer");
    v.field("timeout_s", timeout_s, "Time limit of one equivalence check; a check that runs out is wrong",
            Range::above(0));
  }
};

struct FormatRewardConfig {
  double weight = 0.1;
  std::string pattern = R"((?s)^(?:<think>.*</think>)?(?:(?!<think>).)*\\boxed\{.*\}(?:(?!<think>).)*$)";
  double matched = 1.0;
  double unmatched = 0.0;

  void visit(ConfigVisitor& v) {
    v.field("weight", weight, "Weight of this module in the total reward");
    v.field("pattern", pattern, "PCRE2 pattern the whole response must match");
    v.field("matched", matched, "Score when the response matches");
    v.field("unmatched", unmatched, "Score when it does not");
  }
};

struct OverlongRewardConfig {
  double weight = 1.0;
  int64_t buffer_len = 256;
  double penalty_factor = 1.0;

  void visit(ConfigVisitor& v) {
    v.field("weight", weight, "Weight of this module in the total reward");
    v.field("buffer_len", buffer_len,
            "DAPO soft overlong penalty: responses longer than max_new_tokens - buffer_len lose linearly up to "
            "penalty_factor",
            Range::at_least(1));
    v.field("penalty_factor", penalty_factor, "Largest penalty, reached at max_new_tokens", Range::at_least(0));
  }
};

struct ExternalRewardConfig {
  double weight = 1.0;
  std::vector<std::string> command;
  int64_t workers = 4;
  double timeout_s = 30.0;
  double failure_score = 0.0;

  void visit(ConfigVisitor& v) {
    v.field("weight", weight, "Weight of this module in the total reward");
    v.field("command", command,
            "Executable and arguments of a reward worker: reads one JSON request per stdin line, writes one "
            "{\"reward\": x} line per request");
    v.field("workers", workers, "Worker processes scoring in parallel", Range::at_least(1));
    v.field("timeout_s", timeout_s, "Per-sample time limit; the worker is restarted and the sample scores failure_score",
            Range::above(0));
    v.field("failure_score", failure_score, "Score of a sample whose worker timed out, crashed or answered garbage");
  }
};

struct RewardConfig {
  std::vector<std::string> modules = {"math"};
  MathRewardConfig math;
  FormatRewardConfig format;
  OverlongRewardConfig overlong;
  ExternalRewardConfig external;

  void visit(ConfigVisitor& v) {
    v.field("modules", modules, "Reward modules summed with their weights: math, format, overlong, external");
    v.section("math", "Answer correctness from the built-in math verifier", math);
    v.section("format", "Whether the response has the expected shape", format);
    v.section("overlong", "DAPO soft overlong length penalty (0 or negative)", overlong);
    v.section("external", "A user executable speaking JSON lines, run as a worker pool", external);
  }
};

// G²RL (../shared/research/g2rl.md): rewards scaled by how novel each response's final-layer gradient feature is
// among its group. The paper's open choices are switches.
struct G2rlConfig {
  bool enabled = false;
  std::string mode = "literal";
  double lambda = 0.5;
  double clip = 3.0;
  std::string nu_norm = "minmax";
  std::string zero_var_groups = "shape";

  void visit(ConfigVisitor& v) {
    v.field("enabled", enabled,
            "Shape rewards by gradient novelty; the base reward is the verifier's verdict mapped to +1/-1");
    v.choice("mode", mode,
             "literal: r~ = r (1 + lambda r nu) as eq. 12 is written; prose: r~ = r (1 + lambda (2 nu - 1)), the "
             "bounded scaler the paper's text describes",
             {"literal", "prose"});
    v.field("lambda", lambda, "Shaping strength", Range::at_least(0));
    v.field("clip", clip, "Shaped rewards are clipped to [-clip, clip]", Range::above(0));
    v.choice("nu_norm", nu_norm, "Novelty normalisation within the group", {"minmax", "none"});
    v.choice("zero_var_groups", zero_var_groups,
             "Groups whose base rewards are all equal: shape them as the paper does, or skip (keep r)",
             {"shape", "skip"});
  }
};

// Data parallelism across the ranks of an mpirun job (one rank per GPU or per CPU socket). Without a launcher
// the run is a single rank and these keys change nothing.
struct DistConfig {
  int64_t zero_stage = 0;
  double bucket_mb = 25.0;
  double timeout_s = 1800.0;

  void visit(ConfigVisitor& v) {
    v.field("zero_stage", zero_stage,
            "0: every rank holds the whole AdamW state and all-reduces the gradients | 1 (ZeRO-1): each rank "
            "holds 1/world of it, gradients are reduce-scattered and the updated parameters all-gathered",
            Range::closed(0, 1));
    v.field("bucket_mb", bucket_mb, "Gradient and parameter collectives run in buckets of this many MB",
            Range::above(0));
    v.field("timeout_s", timeout_s,
            "Deadline of every collective: a rank that waits longer for a dead or stuck peer stops the job with an "
            "error naming it. Must exceed the longest imbalance between ranks (e.g. generation of long rollouts)",
            Range::above(0));
  }
};

// MASA / MASA-efficient (../shared/research/masa.md): meta rollouts predict the pass rate, solution length and
// notions of a prompt and are rewarded by how well those match the same step's solution rollouts. Choices the
// spec marks as inferred are switches here.
struct MasaExpertSftConfig {
  bool enabled = false;
  int64_t buffer_size = 64;
  double lr = 1e-6;
  double min_notion_score = 0.2;
  std::string target_length = "median";
  std::string unsolved = "zero";

  void visit(ConfigVisitor& v) {
    v.field("enabled", enabled,
            "Behaviour-clone the best-notion meta rollout of each prompt with its JSON corrected to the true "
            "statistics (spec 3.5 recommended form)");
    v.field("buffer_size", buffer_size, "Expert examples collected before one SFT step on them", Range::at_least(1));
    v.field("lr", lr, "Learning rate of the expert SFT step (the RL optimizer is reused)", Range::above(0));
    v.field("min_notion_score", min_notion_score, "Prompts whose best meta rollout's notion score is lower are skipped",
            Range::unit());
    v.choice("target_length", target_length,
             "solution_length written into the corrected JSON: median or midpoint of the correct rollouts' lengths",
             {"median", "midpoint"});
    v.choice("unsolved", unsolved,
             "Prompts with no correct solution rollout: zero (target pass_rate 0 with the first meta rollout that "
             "predicted a length, its length kept; exempt from min_notion_score, since no notion can score without "
             "a correct rollout; skipped when the early cutoff stopped a rollout) or skip (the spec's "
             "recommendation [inferred] and, through the notion threshold, the official code's behaviour; the "
             "expert data then never holds pass_rate 0, which on the toy biased the predictor upward)",
             {"skip", "zero"});
  }
};

struct MasaConfig {
  bool enabled = false;
  int64_t meta_n = 8;
  int64_t meta_max_new_tokens = 4096;
  std::string meta_system_prompt = "You are a helpful assistant.";
  std::string meta_prompt =
      "Think step-by-step between <meta> and </meta>, ensuring comprehensive and detailed reasoning especially for "
      "determining the pass_rate and solution_length values. For each component (math_notion, pass_rate, "
      "solution_length), provide a comprehensive illustration or example during your reasoning in the <meta> "
      "section to clarify how each value is decided. When determining math_notion, ensure that the notions listed "
      "do not directly include the notions already written in the problem statement. After </meta>, return a JSON "
      "object with three keys:\n- math_notion (list[str])\n- pass_rate (integer from 0 to 8)\n- solution_length "
      "(integer from {min_length} to {max_length})\n\nProblem: {problem}";
  int64_t min_solution_length = 128;
  bool strict_parse = false;
  double difficulty_base = 0.01;
  std::string length_bounds = "inclusive";
  std::string notion_exclude = "problem";
  bool efficient = false;
  int64_t efficient_start_step = 80;
  double gate_sigma = 0.1;
  std::string gate_rule = "rounded";
  double gate_min_valid_frac = 0.5;
  bool gate_out_of_range = false;
  double gate_audit_frac = 0.0;
  double gate_min_precision = 0.0;
  int64_t gate_check_window = 32;
  std::string gated_loss_norm = "counted";
  double cutoff_scale = 2.0;
  int64_t cutoff_min_tokens = 128;
  double cutoff_guard_max_over_cap = 1.0;
  bool notion_feed_in = false;
  MasaExpertSftConfig expert_sft;

  void visit(ConfigVisitor& v) {
    v.field("enabled", enabled, "Add the meta path: meta rollouts per prompt, rewarded by self-alignment");
    v.field("meta_n", meta_n, "Meta rollouts per prompt (M)", Range::at_least(1));
    v.field("meta_max_new_tokens", meta_max_new_tokens, "Length limit of meta rollouts", Range::at_least(1));
    v.field("meta_system_prompt", meta_system_prompt, "System message of the meta prompt (empty: none)");
    v.field("meta_prompt", meta_prompt,
            "User message of the meta prompt; {problem} is the solution prompt's user message, {max_length} is "
            "rollout.max_new_tokens, {min_length} is min_solution_length");
    v.field("min_solution_length", min_solution_length,
            "Smallest solution_length the prompt allows; tolerant parsing clamps predictions into "
            "[min_solution_length, rollout.max_new_tokens]",
            Range::at_least(1));
    v.field("strict_parse", strict_parse,
            "Parse meta JSON as the official code does (regex for a compact math_notion-first object, no clamping); "
            "false takes the last balanced JSON object after </meta>, any key order, values clamped");
    v.field("difficulty_base", difficulty_base, "b of the difficulty reward b^|p - p_hat|", Range{0, 1, true, true});
    v.choice("length_bounds", length_bounds,
             "Length reward: predicted length inside [l_min, l_max] of the correct rollouts (inclusive, the paper) "
             "or strictly inside (strict, the official code)",
             {"inclusive", "strict"});
    v.choice("notion_exclude", notion_exclude,
             "Notions dropped before scoring: those inside the problem text (problem) or anywhere in the meta prompt "
             "(meta_prompt, the official code)",
             {"problem", "meta_prompt"});
    v.field("efficient", efficient, "MASA-efficient: predictive gating and early cutoff after efficient_start_step");
    v.field("efficient_start_step", efficient_start_step, "Steps of plain MASA before the efficient pipeline (k)",
            Range::at_least(0));
    v.field("gate_sigma", gate_sigma,
            "Gate a prompt when the std of its predicted pass rates (on the 0-1 scale) is below this and their mean "
            "rounds to 0 or 8 of 8",
            Range::at_least(0));
    v.choice("gate_rule", gate_rule,
             "Which mean counts as 0 or 1 for gating: rounded (round(8 mean) is 0 or 8, the spec's reading) or literal "
             "(every valid prediction is exactly 0/8 or exactly 8/8, the paper's words taken literally)",
             {"rounded", "literal"});
    v.field("gate_min_valid_frac", gate_min_valid_frac,
            "Never gate unless at least this fraction of the prompt's meta rollouts parsed a pass rate",
            Range::unit());
    v.field("gate_out_of_range", gate_out_of_range,
            "Let a pass_rate written outside 0..8 (which tolerant parsing clamps and the reward scores) count as a "
            "confident prediction for the gate; false counts it as unparseable there, since a model that drifts to "
            "\"pass_rate\": 45 on easy problems is not predicting 8/8. The spec is silent [inferred]");
    v.field("gate_audit_frac", gate_audit_frac,
            "Fraction of gated prompts still rolled out (outside the update) to measure gating precision",
            Range::unit());
    v.field("gate_min_precision", gate_min_precision,
            "The gate checks itself: a side of it (gating on \"always solved\", or on \"never solved\") stops "
            "gating while under this share of its last gate_check_window checked verdicts were truly zero-variance. "
            "Checked verdicts: the audited gated prompts (gate_audit_frac, whose rollouts then count as training "
            "time) and the prompts a stopped side would have gated, which are solved and trained instead. 0 turns "
            "the check off. Guards against a confident but wrong meta-predictor; the spec is silent [inferred]",
            Range::unit());
    v.field("gate_check_window", gate_check_window,
            "Checked verdicts each side of the gate remembers for gate_min_precision; a side is judged once a quarter "
            "of them are in",
            Range::at_least(1));
    v.choice("gated_loss_norm", gated_loss_norm,
             "What the update's token-mean divides by when prompts are gated: counted (gated prompts count as the "
             "zero-advantage groups GRPO would have trained: their meta tokens and rollout.n solutions of their mean "
             "predicted length), so gating does not scale the step up; or kept (only the trained tokens, as verl "
             "would do: gating a fraction f multiplies the step by about 1/(1-f)). The spec is silent [inferred]",
             {"counted", "kept"});
    v.field("cutoff_scale", cutoff_scale,
            "Early cutoff: solution rollouts stop at this times the mean predicted length (0 turns cutoff off)",
            Range::at_least(0));
    v.field("cutoff_min_tokens", cutoff_min_tokens, "Smallest per-prompt cutoff", Range::at_least(1));
    v.field("cutoff_guard_max_over_cap", cutoff_guard_max_over_cap,
            "The early cutoff is held back (kept prompts are solved at the full limit) at a step after one where more "
            "than this share of the solution rollouts ran past their prompt's cutoff, applied or not "
            "(masa/cutoff_over_cap_frac, measured from the first MASA step on). Guards against length predictions "
            "too short for the policy, which the cutoff would turn into truncated answers. 1 (the default) never "
            "holds it back, as in the spec, which is silent [inferred]",
            Range::unit());
    v.field("notion_feed_in", notion_feed_in,
            "Append one meta rollout's predicted notions to the solution prompt as a hint (efficient phase)");
    v.section("expert_sft", "Expert meta-trajectory SFT (MASA v1)", expert_sft);
  }
};

// The built-in demo that `introspect train` runs without a config (see src/train/demo.cpp).
struct DemoConfig {
  std::string task = "reverse";
  int64_t sft_steps = 300;
  int64_t grpo_steps = 60;
  double label_noise = 0.4;
  int64_t digits = 4;
  int64_t train_problems = 2000;
  int64_t heldout = 100;
  bool masa_working = false;
  double masa_overthinking = 0.0;

  void visit(ConfigVisitor& v) {
    v.choice("task", task,
             "reverse: digit reversal; masa: MASA's toy (reversal of 2-5 digits plus unlearnable guesses and coin "
             "flips, and meta prompts; see write_masa_task); digit-set: G²RL's toy, the set of a number's digits, "
             "correct in any order (see write_digit_set_task)",
             {"reverse", "masa", "digit-set"});
    v.field("sft_steps", sft_steps, "Warm-start SFT steps on the noisy demonstrations", Range::at_least(1));
    v.field("grpo_steps", grpo_steps, "GRPO steps after the warm start", Range::at_least(1));
    v.field("label_noise", label_noise, "Fraction of demonstrations whose answer is wrong", Range::closed(0, 1));
    v.field("digits", digits, "Problems reverse numbers of this many digits (1-9)", Range::closed(2, 12));
    v.field("train_problems", train_problems, "Training numbers (the SFT demonstrations and the GRPO prompts)",
            Range::at_least(1));
    v.field("heldout", heldout, "Held-out numbers, never seen in training", Range::at_least(1));
    v.field("masa_working", masa_working,
            "MASA's toy: each solution first spells out its digits (\"the next digit is five, ...\"), so "
            "solutions average about 100 tokens against a meta answer's 10 and the meta path is about 9% of rollout "
            "tokens (the paper: 15.5%); rambling reaches 180 tokens and the demo's max_new_tokens is 192");
    v.field("masa_overthinking", masa_overthinking,
            "MASA's toy: this share of the SFT solutions hesitate before their answer (\"wait, \" 7-13 times, 42-78 "
            "tokens), as reasoning models overthink. The answer is unchanged, so only a length limit such as MASA's "
            "early cutoff costs them anything; the demo's max_new_tokens grows by 80. The problems stay the same",
            Range::closed(0, 1));
  }
};

// The whole tree. Top-level keys are the sections below, plus `base:` (a YAML file to inherit).
struct Config {
  RunConfig run;
  LogConfig log;
  ModelConfig model;
  DataConfig data;
  RolloutConfig rollout;
  AlgoConfig algo;
  TrainConfig train;
  RewardConfig reward;
  G2rlConfig g2rl;
  MasaConfig masa;
  DistConfig dist;
  DemoConfig demo;

  void visit(ConfigVisitor& v) {
    v.section("run", "The run folder and process settings", run);
    v.section("log", "Console, log file and progress display", log);
    v.section("model", "The policy checkpoint", model);
    v.section("data", "Datasets and prompt formatting", data);
    v.section("rollout", "Generation (sampling) settings", rollout);
    v.section("algo", "Advantage, policy-loss and KL math", algo);
    v.section("train", "The training loop and optimizer", train);
    v.section("reward", "Reward modules and their weights", reward);
    v.section("g2rl", "G2RL gradient-guided reward shaping", g2rl);
    v.section("masa", "MASA meta-awareness self-alignment and MASA-efficient", masa);
    v.section("dist", "Multi-rank data parallelism (mpirun) and ZeRO-1", dist);
    v.section("demo", "The built-in demo run by `introspect train` without --config", demo);
  }
};

}  // namespace introspect::config
