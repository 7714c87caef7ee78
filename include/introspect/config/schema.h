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

  void visit(ConfigVisitor& v) {
    v.choice("adv_estimator", adv_estimator, "Advantage estimator", {"grpo", "drgrpo", "rloo"});
    v.field("norm_adv_by_std", norm_adv_by_std, "GRPO: divide by the group std (false gives Dr.GRPO)");
    v.choice("std_mode", std_mode, "Group std: unbiased (N-1, verl/TRL) or population (N)",
             {"unbiased", "population"});
    v.field("adv_epsilon", adv_epsilon, "Added to the group std before dividing (verl 1e-6, TRL 1e-4)",
            Range::at_least(0));
    v.field("clip_ratio_low", clip_ratio_low, "PPO clip: ratio floor is 1 - clip_ratio_low", Range::closed(0, 1));
    v.field("clip_ratio_high", clip_ratio_high, "PPO clip: ratio ceiling is 1 + clip_ratio_high (DAPO uses 0.28)",
            Range::at_least(0));
    v.field("clip_ratio_c", clip_ratio_c, "Dual-clip bound for negative advantages", Range::above(1));
    v.choice("loss_agg_mode", loss_agg_mode, "How token losses are aggregated (verl's agg_loss)",
             {"token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"});
    v.field("entropy_coeff", entropy_coeff, "Entropy bonus weight", Range::at_least(0));
    v.field("use_kl_loss", use_kl_loss, "Add a KL penalty against a frozen reference copy of the policy");
    v.field("kl_loss_coef", kl_loss_coef, "KL penalty weight", Range::at_least(0));
    v.choice("kl_loss_type", kl_loss_type, "KL estimator", {"k1", "k2", "k3", "low_var_kl"});
  }
};

struct TrainConfig {
  std::string mode = "grpo";
  int64_t total_steps = 100;
  int64_t prompts_per_step = 32;
  int64_t mini_batch_size = 256;
  int64_t micro_batch_size = 8;
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

  void visit(ConfigVisitor& v) {
    v.choice("mode", mode, "grpo (RL) or sft (cross-entropy on response tokens)", {"grpo", "sft"});
    v.field("total_steps", total_steps, "Optimizer steps to run", Range::at_least(1));
    v.field("prompts_per_step", prompts_per_step, "Prompts sampled per step; sequences = prompts x rollout.n",
            Range::at_least(1));
    v.field("mini_batch_size", mini_batch_size, "Sequences per PPO update", Range::at_least(1));
    v.field("micro_batch_size", micro_batch_size, "Sequences per forward/backward (gradient accumulation)",
            Range::at_least(1));
    v.field("ppo_epochs", ppo_epochs, "Passes over each step's rollouts", Range::at_least(1));
    v.field("lr", lr, "AdamW learning rate", Range::above(0));
    v.field("weight_decay", weight_decay, "AdamW decoupled weight decay", Range::at_least(0));
    v.field("warmup_steps", warmup_steps, "Linear warmup steps", Range::at_least(0));
    v.choice("lr_schedule", lr_schedule, "Schedule after warmup", {"constant", "cosine"});
    v.field("grad_clip", grad_clip, "Global gradient-norm clip; 0 disables it", Range::at_least(0));
    v.field("save_every", save_every, "Checkpoint every N steps; 0 saves only at the end", Range::at_least(0));
    v.field("keep_last", keep_last, "Checkpoints kept on disk", Range::at_least(1));
    v.field("seed", seed, "Seed for data order, sampling and init", Range::at_least(0));
    v.field("deterministic", deterministic, "Bit-identical reruns on CPU (single-threaded reductions)");
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

  void visit(ConfigVisitor& v) {
    v.section("run", "The run folder and process settings", run);
    v.section("log", "Console, log file and progress display", log);
    v.section("model", "The policy checkpoint", model);
    v.section("data", "Datasets and prompt formatting", data);
    v.section("rollout", "Generation (sampling) settings", rollout);
    v.section("algo", "Advantage, policy-loss and KL math", algo);
    v.section("train", "The training loop and optimizer", train);
  }
};

}  // namespace introspect::config
