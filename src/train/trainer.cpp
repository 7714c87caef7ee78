#include "introspect/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "introspect/algo/core_algos.h"
#include "introspect/config/config.h"
#include "introspect/g2rl/g2rl.h"
#include "introspect/core/runtime.h"
#include "introspect/dist/communicator.h"
#include "introspect/dist/optimizer.h"
#include "introspect/io/dataset.h"
#include "introspect/io/log.h"
#include "introspect/io/metrics.h"
#include "introspect/io/progress.h"
#include "introspect/masa/masa.h"
#include "introspect/model/decoder.h"
#include "introspect/reward/reward.h"
#include "introspect/rollout/generator.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"
#include "introspect/train/checkpoint.h"
#include "introspect/train/evaluate.h"

namespace introspect::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// bf16 runs keep fp32 weights and optimizer state (the master copy) and compute the forward under autocast.
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    previous_ = at::autocast::is_autocast_enabled(at::kCPU);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
  }
  ~AutocastScope() {
    if (on_) at::autocast::set_autocast_enabled(at::kCPU, previous_);
  }

 private:
  bool on_, previous_ = false;
};

// One prompt-response sequence of a step.
struct Sequence {
  int64_t group = 0;
  std::vector<int32_t> prompt, response;
  std::vector<float> rollout_logprobs;
  double score = 0;  // the scalar reward the advantage sees
  bool correct = false, truncated = false;
  bool meta = false;  // a MASA meta rollout (its own groups and metrics)
  float advantage = 0;
  at::Tensor old_logp, ref_logp;  // [response length] when computed
  at::Tensor features;            // G²RL's Φ [H], when enabled
};

Sequence sequence_of(const rollout::Sample& s, const std::vector<int32_t>& prompt, int64_t group) {
  Sequence q;
  q.group = group;
  q.prompt = prompt;
  q.response = s.tokens;
  q.rollout_logprobs = s.logprobs;
  q.truncated = s.finish == rollout::FinishReason::kLength;
  return q;
}

// A right-padded micro-batch and where its response tokens sit.
struct MicroBatch {
  at::Tensor ids, attention;  // [b, L]
  at::Tensor hidden_rows;     // [N] flat rows of hidden [b*L, H] that predict each response token
  at::Tensor targets;         // [N] the response tokens
  at::Tensor token_slots;     // [N] flat slots of the [b, T] response grid
  at::Tensor mask;            // [b, T] float
  int64_t rows = 0, width = 0;
};

MicroBatch make_micro(const std::vector<Sequence>& seqs, const std::vector<int64_t>& members) {
  MicroBatch mb;
  mb.rows = static_cast<int64_t>(members.size());
  int64_t L = 1;
  for (int64_t i : members) {
    const auto& s = seqs[i];
    L = std::max<int64_t>(L, static_cast<int64_t>(s.prompt.size() + s.response.size()));
    mb.width = std::max<int64_t>(mb.width, static_cast<int64_t>(s.response.size()));
  }
  mb.width = std::max<int64_t>(mb.width, 1);
  std::vector<int64_t> ids(mb.rows * L, 0), attention(mb.rows * L, 0), hidden_rows, targets, slots;
  std::vector<float> mask(mb.rows * mb.width, 0.f);
  for (int64_t r = 0; r < mb.rows; ++r) {
    const auto& s = seqs[members[r]];
    const int64_t p = static_cast<int64_t>(s.prompt.size());
    for (int64_t t = 0; t < p; ++t) ids[r * L + t] = s.prompt[t], attention[r * L + t] = 1;
    for (size_t t = 0; t < s.response.size(); ++t) {
      ids[r * L + p + t] = s.response[t];
      attention[r * L + p + t] = 1;
      hidden_rows.push_back(r * L + p - 1 + static_cast<int64_t>(t));
      targets.push_back(s.response[t]);
      slots.push_back(r * mb.width + static_cast<int64_t>(t));
      mask[r * mb.width + t] = 1.f;
    }
  }
  mb.ids = torch::tensor(ids, torch::kLong).view({mb.rows, L});
  mb.attention = torch::tensor(attention, torch::kLong).view({mb.rows, L});
  mb.hidden_rows = torch::tensor(hidden_rows, torch::kLong);
  mb.targets = torch::tensor(targets, torch::kLong);
  mb.token_slots = torch::tensor(slots, torch::kLong);
  mb.mask = torch::tensor(mask).view({mb.rows, mb.width});
  return mb;
}

struct TokenOutputs {
  at::Tensor logp, entropy;  // [b, T], zero at padding
};

TokenOutputs response_logprobs(const model::CausalLM& m, const MicroBatch& mb, double temperature, bool bf16) {
  at::Tensor hidden;
  {
    AutocastScope autocast(bf16);
    hidden = m.forward_padded(mb.ids, mb.attention, /*want_logits=*/false).hidden;
  }
  const auto flat = hidden.reshape({-1, hidden.size(-1)}).index_select(0, mb.hidden_rows);
  const auto [lp, ent] = model::chunked_token_logprobs_entropy(flat, m.lm_head_weight(), mb.targets, temperature);
  auto scatter = [&](const at::Tensor& v) {
    return torch::zeros({mb.rows * mb.width}, v.options()).index_copy(0, mb.token_slots, v).view({mb.rows, mb.width});
  };
  return {scatter(lp), scatter(ent)};
}

// The old-log-prob pass with G²RL's sequence features Φ [b, H] from the same chunks (no extra forward).
std::pair<at::Tensor, at::Tensor> response_logprobs_features(const model::CausalLM& m, const MicroBatch& mb,
                                                             double temperature, bool bf16) {
  at::Tensor hidden;
  {
    AutocastScope autocast(bf16);
    hidden = m.forward_padded(mb.ids, mb.attention, /*want_logits=*/false).hidden;
  }
  const auto flat = hidden.reshape({-1, hidden.size(-1)}).index_select(0, mb.hidden_rows);
  const auto rows = torch::div(mb.token_slots, mb.width, "floor");
  const auto f = model::chunked_logprobs_and_features(flat, m.lm_head_weight(), mb.targets, rows, mb.rows, temperature);
  const auto grid =
      torch::zeros({mb.rows * mb.width}).index_copy(0, mb.token_slots, f.logp).view({mb.rows, mb.width});
  return {grid, f.features};
}

// Splits a [b, T] grid back into per-sequence vectors (for stored old / reference log-probs).
void store_rows(std::vector<Sequence>& seqs, const std::vector<int64_t>& members, const at::Tensor& grid,
                at::Tensor Sequence::*field) {
  for (size_t r = 0; r < members.size(); ++r) {
    auto& s = seqs[members[r]];
    s.*field = grid[static_cast<int64_t>(r)].narrow(0, 0, static_cast<int64_t>(s.response.size())).clone();
  }
}
at::Tensor gather_rows(const std::vector<Sequence>& seqs, const std::vector<int64_t>& members, int64_t width,
                       at::Tensor Sequence::*field) {
  auto out = torch::zeros({static_cast<int64_t>(members.size()), width});
  for (size_t r = 0; r < members.size(); ++r) {
    const auto& v = seqs[members[r]].*field;
    if (v.numel()) out[static_cast<int64_t>(r)].narrow(0, 0, v.numel()).copy_(v);
  }
  return out;
}

// The micro-batches of `items` (places in seqs): at most `rows` sequences each, in order. With a token budget,
// longest first and each also capped at `tokens` padded tokens (rows x its longest), so sequences of like
// length share a batch. Losses are normalised by batch-wide counts, so the split never changes the gradient;
// it only decides how much padding the forward pays for.
std::vector<std::vector<int64_t>> micro_batches(const std::vector<Sequence>& seqs, std::vector<int64_t> items,
                                                int64_t rows, int64_t tokens) {
  const auto length = [&](int64_t i) { return static_cast<int64_t>(seqs[i].prompt.size() + seqs[i].response.size()); };
  if (tokens > 0)
    std::stable_sort(items.begin(), items.end(), [&](int64_t a, int64_t b) { return length(a) > length(b); });
  std::vector<std::vector<int64_t>> out;
  int64_t longest = 0;
  for (int64_t i : items) {
    const auto n = out.empty() ? rows : static_cast<int64_t>(out.back().size());
    if (n >= rows || (tokens > 0 && (n + 1) * longest > tokens)) out.emplace_back(), longest = length(i);
    out.back().push_back(i);
  }
  return out;
}

// Metric sums weighted by tokens, turned into means at the end of a step.
struct Accumulator {
  std::map<std::string, double> sum;
  std::map<std::string, double> weight;
  void add(const std::string& k, double value, double w) { sum[k] += value * w, weight[k] += w; }
  void write(std::map<std::string, double>& out) const {
    for (const auto& [k, v] : sum) out[k] = weight.at(k) > 0 ? v / weight.at(k) : 0.0;
  }
};

// A problem ready to be sampled: its prompt ids under the run's chat template.
struct PreparedProblem {
  const io::Problem* problem = nullptr;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> target_ids;  // SFT
  std::vector<int32_t> meta_ids;    // MASA's meta prompt
  std::string meta_prompt_text;     // ... decoded (masa.notion_exclude=meta_prompt)
};

// One supervised example (SFT data, MASA's expert meta trajectories).
struct SftExample {
  std::vector<int32_t> prompt, target;
  int64_t order = 0;  // MASA's expert buffer: the trajectory's place in the buffer's global first-in-first-out
};

class Trainer {
 public:
  Trainer(const config::Config& cfg, const RunOptions& options) : cfg_(cfg), options_(options) {}
  RunResult run();

 private:
  void setup();
  void load_data();
  void resume();
  void drop_metrics_from(int64_t first_lost_step) const;
  void save_checkpoint();
  void export_final();
  std::map<std::string, double> grpo_step();
  std::map<std::string, double> sft_step();
  void evaluate_into(std::map<std::string, double>& metrics, const std::string& prefix);
  rollout::SamplingParams sampling(uint64_t seed) const;
  double optimizer_step(std::map<std::string, double>& metrics, double loss_value, double lr);
  std::vector<int64_t> my_share(int64_t n) const;
  std::vector<int64_t> global_order(const std::vector<Sequence>& seqs) const;
  void merge_rank_metrics(std::map<std::string, double>& m, double weight) const;
  std::vector<Sequence> rollout_groups(const std::vector<int64_t>& indices, std::map<std::string, double>& metrics,
                                       double& t_generate, double& t_score);
  std::vector<Sequence> grpo_rollouts(std::map<std::string, double>& m, double& t_generate, double& t_score);
  std::vector<Sequence> masa_rollouts(std::map<std::string, double>& m, double& t_generate, double& t_score);
  std::vector<rollout::Sample> generate(const std::vector<rollout::Prompt>& prompts, int64_t n, uint64_t seed);
  std::vector<reward::Group> solution_groups(const std::vector<int64_t>& problems,
                                             const std::vector<rollout::Prompt>& prompts,
                                             const std::vector<rollout::Sample>& samples) const;
  double sft_update(const std::vector<SftExample>& examples);
  void expert_sft_step(std::map<std::string, double>& m);

  const config::Config& cfg_;
  RunOptions options_;
  fs::path out_;
  bool bf16_ = false;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::optional<tokenizer::PromptFormatter> format_, meta_format_;
  std::optional<model::CausalLM> model_, reference_;
  std::unique_ptr<dist::Communicator> owned_comm_;
  dist::Communicator* comm_ = nullptr;
  bool lead_ = true;  // rank 0: the one that writes files
  std::unique_ptr<dist::DistributedAdamW> optimizer_;
  double lr_ = 0;  // this step's learning rate
  // MASA's gated prompts as the zero-advantage tokens and sequences GRPO would have trained (over all ranks);
  // the update counts them in its token-mean (masa.gated_loss_norm=counted). Zero outside a gated step.
  std::array<double, 2> gated_absent_{0, 0};
  std::unique_ptr<reward::RewardSet> rewards_, meta_rewards_;
  std::vector<SftExample> expert_buffer_;  // MASA expert meta trajectories waiting for their SFT step
  masa::GateCheck gate_check_;             // MASA's gate's checked verdicts (the same on every rank)
  std::optional<double> cutoff_over_cap_;  // last step's masa/cutoff_over_cap_frac, for the cutoff guard
  io::Dataset train_set_, eval_set_;
  std::vector<PreparedProblem> prepared_;
  int64_t skipped_long_prompts_ = 0;
  std::unique_ptr<io::EpochSampler> sampler_;
  std::unique_ptr<io::MetricsWriter> metrics_;
  int64_t step_ = 0;
  int64_t nonfinite_in_a_row_ = 0, nonfinite_total_ = 0, checkpoint_failures_ = 0;
};

rollout::SamplingParams Trainer::sampling(uint64_t seed) const {
  auto p = rollout::sampling_params(cfg_.rollout);
  p.seed = seed;
  return p;
}

void Trainer::setup() {
  comm_ = options_.comm;
  if (!comm_) owned_comm_ = dist::from_environment(cfg_.dist.timeout_s), comm_ = owned_comm_.get();
  lead_ = comm_->rank() == 0;
  const int world = comm_->world_size();
  out_ = cfg_.run.out_dir;
  if (lead_) {
    fs::create_directories(out_);
    log::init(cfg_.log.level, out_ / "train.log");
  } else {
    log::init(cfg_.log.level == "error" ? "error" : "warn");  // rank 0 tells the story; the others only warn
  }
  // 0 threads means every core, shared by the ranks on this host.
  int64_t threads = cfg_.run.threads;
  if (threads == 0 && comm_->local_size() > 1)
    threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / comm_->local_size());
  core::init_torch(threads);
  if (cfg_.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  if (lead_) config::save_yaml(cfg_, out_ / "config.yaml");
  if (world > 1)
    log::info("data parallel over ", world, " ranks (", comm_->backend(), "), dist.zero_stage=", cfg_.dist.zero_stage);
  if (cfg_.model.path.empty()) throw std::runtime_error("model.path is empty: give an HF checkpoint folder");
  bf16_ = cfg_.model.dtype == "bf16";
  tok_ = tokenizer::Tokenizer::load(cfg_.model.path);
  format_.emplace(cfg_.data, *tok_, cfg_.model.path);
  model_ = model::CausalLM::load(cfg_.model.path, at::kFloat);
  model_->set_activation_checkpointing(cfg_.model.activation_checkpointing);
  if (cfg_.train.mode == "grpo" && (cfg_.algo.use_kl_loss || cfg_.algo.use_kl_in_reward)) {
    reference_ = model::CausalLM::load(cfg_.model.path, at::kFloat);
    for (auto& p : reference_->parameters()) p.requires_grad_(false);
  }
  dist::AdamWOptions opts;
  opts.weight_decay = cfg_.train.weight_decay;
  optimizer_ = std::make_unique<dist::DistributedAdamW>(model_->parameters(), opts, *comm_, cfg_.dist.zero_stage,
                                                        cfg_.dist.bucket_mb);
  if (cfg_.train.mode == "grpo") rewards_ = std::make_unique<reward::RewardSet>(cfg_.reward);
  if (cfg_.masa.enabled) {
    if (cfg_.train.mode != "grpo") throw std::runtime_error("masa.enabled needs train.mode=grpo");
    if (cfg_.g2rl.enabled) throw std::runtime_error("masa.enabled and g2rl.enabled cannot be combined");
    if (cfg_.algo.dynamic_sampling)
      throw std::runtime_error("masa.enabled and algo.dynamic_sampling cannot be combined (gating replaces it)");
    if (cfg_.masa.gate_min_precision > 0 && cfg_.masa.gate_audit_frac <= 0)
      throw std::runtime_error("masa.gate_min_precision needs masa.gate_audit_frac > 0: without audits a side of the "
                               "gate that is gating is never checked");
    gate_check_.min_precision = cfg_.masa.gate_min_precision;
    gate_check_.window = cfg_.masa.gate_check_window;
    if (std::find(cfg_.reward.modules.begin(), cfg_.reward.modules.end(), "math") == cfg_.reward.modules.end())
      throw std::runtime_error("masa.enabled needs the math module in reward.modules: meta rewards compare with "
                               "the solution rollouts' verdicts");
    auto meta_data = cfg_.data;
    meta_data.system_prompt = cfg_.masa.meta_system_prompt;
    meta_format_.emplace(meta_data, *tok_, cfg_.model.path);
    std::vector<reward::WeightedModule> modules;
    modules.push_back({std::make_unique<masa::MetaRewardModule>(cfg_.masa, cfg_.rollout.max_new_tokens), 1.0});
    meta_rewards_ = std::make_unique<reward::RewardSet>(std::move(modules));
  }
  load_data();
}

void Trainer::load_data() {
  const auto& d = cfg_.data;
  if (d.train_path.empty()) throw std::runtime_error("data.train_path is empty");
  auto o = io::dataset_options(d);
  if (cfg_.train.mode == "sft") o.response_field = d.response_field;
  train_set_ = io::Dataset::load(d.train_path, o);
  if (train_set_.skipped) log::warn(d.train_path, ": skipped ", train_set_.skipped, " malformed rows");
  for (const auto& p : train_set_.problems) {
    PreparedProblem prep;
    prep.problem = &p;
    prep.prompt_ids = format_->encode(p.prompt);
    if (static_cast<int64_t>(prep.prompt_ids.size()) > d.max_prompt_tokens) {
      ++skipped_long_prompts_;
      log::debug(p.source, ": prompt of ", prep.prompt_ids.size(), " tokens exceeds data.max_prompt_tokens=",
                 d.max_prompt_tokens, "; skipped");
      continue;
    }
    if (cfg_.train.mode == "sft") {
      prep.target_ids = tok_->encode(p.target, false);
      if (tok_->eos_id()) prep.target_ids.push_back(*tok_->eos_id());
    }
    if (meta_format_) {
      prep.meta_ids = meta_format_->encode(masa::meta_user_message(
          cfg_.masa.meta_prompt, p.prompt, cfg_.masa.min_solution_length, cfg_.rollout.max_new_tokens));
      if (static_cast<int64_t>(prep.meta_ids.size()) > d.max_prompt_tokens) {
        ++skipped_long_prompts_;
        log::debug(p.source, ": meta prompt of ", prep.meta_ids.size(), " tokens exceeds data.max_prompt_tokens=",
                   d.max_prompt_tokens, "; skipped");
        continue;
      }
      if (cfg_.masa.notion_exclude == "meta_prompt") prep.meta_prompt_text = tok_->decode(prep.meta_ids, true);
    }
    prepared_.push_back(std::move(prep));
  }
  if (skipped_long_prompts_)
    log::warn(d.train_path, ": skipped ", skipped_long_prompts_, " prompts longer than data.max_prompt_tokens=",
              d.max_prompt_tokens);
  if (prepared_.empty())
    throw std::runtime_error(d.train_path + ": no usable problems (" + std::to_string(train_set_.problems.size()) +
                             " read, " + std::to_string(train_set_.skipped) + " malformed, " +
                             std::to_string(skipped_long_prompts_) + " over data.max_prompt_tokens)");
  sampler_ = std::make_unique<io::EpochSampler>(static_cast<int64_t>(prepared_.size()),
                                                static_cast<uint64_t>(cfg_.train.seed), d.shuffle);
  if (!d.eval_path.empty()) {
    io::DatasetOptions e = o;
    e.response_field.clear();
    eval_set_ = io::Dataset::load(d.eval_path, e);
    if (cfg_.train.eval_max_problems > 0 &&
        static_cast<int64_t>(eval_set_.problems.size()) > cfg_.train.eval_max_problems)
      eval_set_.problems.resize(static_cast<size_t>(cfg_.train.eval_max_problems));
  }
}

// ---- checkpoints --------------------------------------------------------------------------------------------

// Collective. Rank 0 writes the weights, state.json and its optimizer shard into the temporary folder and
// hands its path to the others, who add their shards; the folder is renamed and marked DONE only when every
// rank reports success (a shared filesystem is assumed across hosts).
void Trainer::save_checkpoint() {
  const auto write_my_shard = [&](const fs::path& tmp) -> std::string {
    try {
      optimizer_->save(tmp / "optimizer");
      return "";
    } catch (const std::exception& e) {
      return "rank " + std::to_string(comm_->rank()) + ": " + e.what();
    }
  };
  // Every rank runs this exchange once per checkpoint, whatever failed, so the collectives stay in step.
  const auto exchange = [&](const std::string& tmp_or_empty, const std::string& own_error) {
    const std::string dir = dist::broadcast_string(*comm_, tmp_or_empty);
    std::string error = own_error;
    if (!dir.empty() && !lead_) error = write_my_shard(dir);
    std::string joined;
    for (const auto& e : dist::all_gather_strings(*comm_, error))
      if (!e.empty()) joined += (joined.empty() ? "" : "; ") + e;
    return joined;
  };
  // MASA's expert buffer is spread over the ranks: state.json keeps all of it.
  nlohmann::json my_buffer = nlohmann::json::array();
  for (const auto& ex : expert_buffer_)
    my_buffer.push_back({{"prompt", ex.prompt}, {"target", ex.target}, {"order", ex.order}});
  nlohmann::json expert_buffer = nlohmann::json::array();
  for (const auto& text : dist::all_gather_strings(*comm_, my_buffer.dump()))
    for (auto& ex : nlohmann::json::parse(text)) expert_buffer.push_back(std::move(ex));
  if (!lead_) {
    exchange("", "");
    return;
  }
  bool exchanged = false;
  try {
    const auto dir = write_checkpoint(out_ / "checkpoints", step_, [&](const fs::path& tmp) {
      exchanged = true;
      std::string error;
      try {
        model_->save(tmp / "model");
        torch::serialize::OutputArchive rng;
        rng.write("cpu_generator", at::detail::getDefaultCPUGenerator().get_state());
        rng.save_to((tmp / "rng.pt").string());
        const auto cursor = sampler_->cursor();
        nlohmann::json state{{"step", step_},
                             {"data_epoch", cursor.epoch},
                             {"data_offset", cursor.offset},
                             {"nonfinite_in_a_row", nonfinite_in_a_row_},
                             {"nonfinite_total", nonfinite_total_},
                             {"lr", learning_rate_at(cfg_.train, step_)},
                             {"world_size", comm_->world_size()},
                             {"zero_stage", cfg_.dist.zero_stage}};
        if (!expert_buffer.empty()) state["masa_expert_buffer"] = expert_buffer;
        if (!gate_check_.solved.empty() || !gate_check_.unsolved.empty())
          state["masa_gate_check"] = {{"solved", gate_check_.solved}, {"unsolved", gate_check_.unsolved}};
        if (cutoff_over_cap_) state["masa_cutoff_over_cap"] = *cutoff_over_cap_;
        std::ofstream f(tmp / "state.json");
        f << state.dump(2) << "\n";
        if (!f.flush()) throw std::runtime_error("cannot write " + (tmp / "state.json").string());
        error = write_my_shard(tmp);
      } catch (const std::exception& e) {
        error = std::string("rank 0: ") + e.what();
      }
      const std::string errors = exchange(error.empty() ? tmp.string() : "", error);
      if (!errors.empty()) throw std::runtime_error(errors);
      // Every shard the layout names must be on disk (a rank on another host may write to another filesystem).
      const auto layout = nlohmann::json::parse(std::ifstream(tmp / "optimizer" / "layout.json"));
      for (const auto& shard : layout.at("shards"))
        if (!fs::exists(tmp / "optimizer" / shard.at("file").get<std::string>()))
          throw std::runtime_error("optimizer shard " + shard.at("file").get<std::string>() +
                                   " is missing from " + tmp.string() + " (do all ranks share the output folder?)");
    });
    prune_checkpoints(out_ / "checkpoints", cfg_.train.keep_last);
    log::info("checkpoint ", dir.string());
  } catch (const dist::CollectiveError&) {
    throw;  // a lost rank ends the run (the exchange cannot be repeated); it must not pass as a failed save
  } catch (const std::exception& e) {
    if (!exchanged) exchange("", std::string("rank 0: ") + e.what());  // the temporary folder was never made
    // A full disk or an I/O error loses this checkpoint only; the previous complete one stays.
    ++checkpoint_failures_;
    log::error("checkpoint at step ", step_, " failed, the previous one is kept: ", e.what());
  }
}

// The steps from first_lost_step on were lost with the killed process and run again now: their metric lines go,
// so that the file reads as one run.
void Trainer::drop_metrics_from(int64_t first_lost_step) const {
  const auto path = out_ / "metrics.jsonl";
  if (!lead_ || !fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) < first_lost_step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line from the kill
    }
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
}

// Collective: rank 0 picks the checkpoint, every rank loads the weights and its re-cut optimizer shard.
void Trainer::resume() {
  if (!options_.resume_auto) return;
  std::string picked;
  if (lead_) {
    const auto latest = latest_checkpoint(out_ / "checkpoints");
    if (latest) picked = latest->dir.string();
  }
  picked = dist::broadcast_string(*comm_, picked);
  if (picked.empty()) {
    log::info("--resume auto: no complete checkpoint in ", (out_ / "checkpoints").string(), "; starting fresh");
    drop_metrics_from(0);  // a run killed before its first checkpoint starts over, step-0 evaluation included
    return;
  }
  const fs::path dir = picked;
  const auto loaded = model::CausalLM::load(dir / "model", at::kFloat);
  {
    c10::NoGradGuard no_grad;
    const auto src = loaded.named_parameters();
    auto dst = model_->named_parameters();
    if (src.size() != dst.size()) throw std::runtime_error(dir.string() + ": parameter count differs");
    for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  optimizer_->load(dir / "optimizer");
  if (fs::exists(dir / "rng.pt")) {
    torch::serialize::InputArchive rng;
    rng.load_from((dir / "rng.pt").string());
    at::Tensor state;
    rng.read("cpu_generator", state);
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(state);
  }
  std::ifstream f(dir / "state.json");
  const auto state = nlohmann::json::parse(f);
  step_ = state.at("step").get<int64_t>();
  sampler_->restore({state.at("data_epoch").get<int64_t>(), state.at("data_offset").get<int64_t>()});
  nonfinite_in_a_row_ = state.value("nonfinite_in_a_row", 0);
  nonfinite_total_ = state.value("nonfinite_total", 0);
  // The saved buffer is dealt out again over the ranks now running (its order keys keep the FIFO).
  expert_buffer_.clear();
  const auto buffer = state.value("masa_expert_buffer", nlohmann::json::array());
  for (size_t i = static_cast<size_t>(comm_->rank()); i < buffer.size(); i += static_cast<size_t>(comm_->world_size())) {
    const auto& ex = buffer[i];
    expert_buffer_.push_back({ex.at("prompt").get<std::vector<int32_t>>(), ex.at("target").get<std::vector<int32_t>>(),
                              ex.value("order", static_cast<int64_t>(i))});
  }
  // The gate's checked verdicts, replayed so that a changed masa.gate_check_window keeps the newest.
  gate_check_.solved.clear(), gate_check_.unsolved.clear();
  const auto checked = state.value("masa_gate_check", nlohmann::json::object());
  for (const bool side : {false, true})
    for (const bool zero_variance : checked.value(side ? "solved" : "unsolved", std::vector<bool>{}))
      gate_check_.add(side, zero_variance);
  cutoff_over_cap_.reset();
  if (state.contains("masa_cutoff_over_cap")) cutoff_over_cap_ = state.at("masa_cutoff_over_cap").get<double>();
  drop_metrics_from(step_ + 1);
  log::info("resumed from ", dir.string(), " at step ", step_, " (saved by ", state.value("world_size", 1),
            " rank(s) with zero_stage ", state.value("zero_stage", 0), "; now ", comm_->world_size(), " with ",
            cfg_.dist.zero_stage, ")");
}

void Trainer::export_final() {
  const auto dir = out_ / "export";
  const auto tmp = out_ / ".export_tmp";
  fs::remove_all(tmp);
  model_->save(tmp, 5'000'000'000ull, cfg_.model.path);
  for (const auto& e : fs::directory_iterator(tmp)) fsync_path(e.path());
  fs::remove_all(dir);
  fs::rename(tmp, dir);
}

// ---- optimisation -------------------------------------------------------------------------------------------

// Collective: the loss is summed over the ranks (each normalised its share by the global counts), the
// gradients are summed, clipped and applied by the optimizer. Every rank sees the same norm and loss, so they
// agree on skipping a non-finite update. Returns the summed loss.
double Trainer::optimizer_step(std::map<std::string, double>& metrics, double loss_value, double lr) {
  loss_value = dist::all_reduce_sum(*comm_, loss_value);
  double norm = std::numeric_limits<double>::quiet_NaN();
  bool applied = false;
  if (std::isfinite(loss_value)) {
    const auto r = optimizer_->step(cfg_.train.grad_clip, lr);
    norm = r.grad_norm, applied = r.applied;
  } else {
    optimizer_->zero_grad();
  }
  metrics["actor/grad_norm"] = norm;
  if (!applied) {
    ++nonfinite_in_a_row_;
    ++nonfinite_total_;
    metrics["train/skipped_nonfinite"] = 1;
    log::warn("step ", step_ + 1, ": non-finite loss or gradient (loss ", loss_value, ", grad norm ", norm,
              "); update skipped (", nonfinite_in_a_row_, " in a row)");
    if (nonfinite_in_a_row_ >= cfg_.train.max_nonfinite_steps)
      throw std::runtime_error("stopping: " + std::to_string(nonfinite_in_a_row_) +
                               " updates in a row had a non-finite loss or gradient (train.max_nonfinite_steps=" +
                               std::to_string(cfg_.train.max_nonfinite_steps) + ")");
    return loss_value;
  }
  nonfinite_in_a_row_ = 0;
  return loss_value;
}

// This rank's share of n items (prompts or groups): every world_size-th, so the ranks' shares of any
// contiguous run of items are as even as they can be.
std::vector<int64_t> Trainer::my_share(int64_t n) const {
  std::vector<int64_t> out;
  for (int64_t j = comm_->rank(); j < n; j += comm_->world_size()) out.push_back(j);
  return out;
}

// Each sequence's position in the step's global batch, as one process would order it (groups in order, the
// samples of a group in order). Mini-batches are cut on it, so the ranks' parts of mini-batch k are together
// exactly one process's mini-batch k. Collective.
std::vector<int64_t> Trainer::global_order(const std::vector<Sequence>& seqs) const {
  std::vector<int64_t> order(seqs.size());
  if (comm_->world_size() == 1) {
    std::iota(order.begin(), order.end(), 0);
    return order;
  }
  int64_t groups = 0;
  for (const auto& q : seqs) groups = std::max(groups, q.group + 1);
  comm_->all_reduce(&groups, 1, dist::DType::kInt64, dist::ReduceOp::kMax);
  std::vector<int64_t> sizes(static_cast<size_t>(groups), 0), start(static_cast<size_t>(groups), 0);
  for (const auto& q : seqs) ++sizes[static_cast<size_t>(q.group)];
  if (groups > 0) comm_->all_reduce(sizes.data(), sizes.size(), dist::DType::kInt64, dist::ReduceOp::kSum);
  for (size_t g = 1; g < sizes.size(); ++g) start[g] = start[g - 1] + sizes[g - 1];
  for (size_t i = 0; i < seqs.size(); ++i) order[i] = start[static_cast<size_t>(seqs[i].group)]++;
  return order;
}

// Collective: every rank ends with the same metrics. Times and maxima take the largest value over the ranks,
// throughputs and token counts add up, and the rest (rates and means over this rank's sequences) are averaged
// with each rank's `weight` (its sequences). Values that every rank computed globally come out unchanged.
void Trainer::merge_rank_metrics(std::map<std::string, double>& m, double weight) const {
  if (comm_->world_size() == 1) return;
  const nlohmann::json mine{{"weight", weight}, {"metrics", m}};
  std::map<std::string, double> weighted, weights, total, top, low;
  std::set<std::string> keys;
  for (const auto& text : dist::all_gather_strings(*comm_, mine.dump())) {
    const auto j = nlohmann::json::parse(text);
    const double w = j.at("weight").get<double>();
    for (const auto& [k, v] : j.at("metrics").items()) {
      const double x = v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
      keys.insert(k);
      if (!std::isfinite(x)) continue;  // a rank with nothing to report (NaN) does not poison the others
      weighted[k] += x * w, weights[k] += w, total[k] += x;
      low[k] = low.count(k) ? std::min(low[k], x) : x;
      top[k] = top.count(k) ? std::max(top[k], x) : x;
    }
  }
  m.clear();
  const auto ends_with = [](const std::string& k, const std::string& tail) {
    return k.size() >= tail.size() && k.compare(k.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const auto& k : keys) {
    if (!top.count(k)) {
      m[k] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    // Wall times and maxima take the slowest rank; minima the smallest; counts and throughputs add up.
    const bool largest = k.rfind("time/", 0) == 0 || ends_with(k, "/max") || ends_with(k, "_max") ||
                         (k.rfind("reward/", 0) == 0 && ends_with(k, "/seconds"));
    const bool smallest = ends_with(k, "/min") || ends_with(k, "_min");
    const bool extensive = k.rfind("throughput/", 0) == 0 || k == "rollout/solution_tokens" ||
                           (k.rfind("reward/", 0) == 0 && ends_with(k, "/errors"));
    m[k] = largest ? top[k] : smallest ? low[k] : extensive ? total[k] : weights[k] > 0 ? weighted[k] / weights[k] : top[k];
  }
}

std::vector<rollout::Sample> Trainer::generate(const std::vector<rollout::Prompt>& prompts, int64_t n,
                                              uint64_t seed) {
  if (prompts.empty()) return {};
  model_->pack_for_inference(cfg_.rollout.max_batch);
  const rollout::Generator generator(*model_, cfg_.rollout.max_batch, cfg_.rollout.kv_budget_mb << 20, tok_.get());
  auto params = sampling(seed);
  params.n = n;
  AutocastScope autocast(bf16_);
  return generator.generate(prompts, params);
}

// The reward modules' view of each prompt's samples; problems[j] is the prepared problem of prompts[j].
std::vector<reward::Group> Trainer::solution_groups(const std::vector<int64_t>& problems,
                                                    const std::vector<rollout::Prompt>& prompts,
                                                    const std::vector<rollout::Sample>& samples) const {
  std::vector<reward::Group> groups(prompts.size());
  for (size_t j = 0; j < prompts.size(); ++j) {
    const auto& prob = *prepared_[problems[j]].problem;
    groups[j].prompt = prob.prompt;
    groups[j].ground_truth = prob.answer;
    groups[j].metadata = prob.row;
    groups[j].max_new_tokens = prompts[j].max_new_tokens > 0 ? prompts[j].max_new_tokens : cfg_.rollout.max_new_tokens;
  }
  for (const auto& s : samples)
    groups[s.prompt_index].responses.push_back(
        {tok_->decode(s.tokens, /*skip_special=*/true), s.tokens, s.finish == rollout::FinishReason::kLength});
  return groups;
}

std::vector<Sequence> Trainer::rollout_groups(const std::vector<int64_t>& indices,
                                              std::map<std::string, double>& metrics, double& t_generate,
                                              double& t_score) {
  auto t0 = Clock::now();
  // This rank's share of the round's groups. Group ids and RNG streams stay the round's global positions, so
  // each sample is what one process would draw.
  std::vector<rollout::Prompt> prompts;
  std::vector<int64_t> problems, position;
  for (int64_t j : my_share(static_cast<int64_t>(indices.size()))) {
    prompts.push_back({prepared_[indices[j]].prompt_ids, -1, j});
    problems.push_back(indices[j]);
    position.push_back(j);
  }
  // Each step (and each extra round of dynamic sampling) draws from its own seed, so a resumed run repeats it.
  const uint64_t seed = mix(mix(static_cast<uint64_t>(cfg_.rollout.seed), static_cast<uint64_t>(step_)),
                            static_cast<uint64_t>(metrics["rollout/gen_batches"]));
  const auto samples = generate(prompts, cfg_.rollout.n, seed);
  t_generate += seconds_since(t0);

  t0 = Clock::now();
  const auto groups = solution_groups(problems, prompts, samples);
  std::vector<Sequence> seqs;
  const auto scores = rewards_->score(groups);
  for (const auto& [k, v] : scores.metrics) metrics[k] += v;  // averaged over rounds by the caller
  std::vector<size_t> seen(groups.size(), 0);
  for (const auto& s : samples) {
    const size_t g = static_cast<size_t>(s.prompt_index), j = seen[g]++;
    auto q = sequence_of(s, prompts[g].ids, position[g]);
    q.score = scores.rewards[g][j];
    q.correct = !scores.correct.empty() && scores.correct[g][j];
    seqs.push_back(std::move(q));
  }
  t_score += seconds_since(t0);
  metrics["rollout/gen_batches"] += 1;
  return seqs;
}

// Plain GRPO rollouts: G per prompt. With dynamic sampling, groups whose rewards are all equal are dropped and
// more prompts are drawn until the step is full or max_gen_batches is reached.
std::vector<Sequence> Trainer::grpo_rollouts(std::map<std::string, double>& m, double& t_generate, double& t_score) {
  const auto& a = cfg_.algo;
  const auto& t = cfg_.train;
  std::vector<Sequence> seqs;
  int64_t groups_kept = 0, groups_seen = 0, zero_std_groups = 0;
  double all_reward_sum = 0, all_correct = 0, all_count = 0;
  while (groups_kept < t.prompts_per_step) {
    const int64_t want = a.dynamic_sampling ? t.prompts_per_step - groups_kept : t.prompts_per_step;
    auto round = rollout_groups(sampler_->next(want), m, t_generate, t_score);
    const int64_t n_groups = want;
    // [lo..., -hi...] reduced with min over the ranks: every rank learns every group's spread.
    std::vector<double> spread(static_cast<size_t>(2 * n_groups), 1e300);
    for (const auto& q : round) {
      auto& lo = spread[q.group];
      auto& neg_hi = spread[n_groups + q.group];
      lo = std::min(lo, q.score), neg_hi = std::min(neg_hi, -q.score);
      all_reward_sum += q.score, all_correct += q.correct, all_count += 1;
    }
    comm_->all_reduce(spread.data(), spread.size(), dist::DType::kFloat64, dist::ReduceOp::kMin);
    groups_seen += n_groups;
    std::vector<int64_t> renumber(n_groups, -1);
    for (int64_t g = 0; g < n_groups; ++g) {
      const bool zero_std = -spread[n_groups + g] <= spread[g];
      zero_std_groups += zero_std;
      if (!(a.dynamic_sampling && zero_std) && groups_kept < t.prompts_per_step) renumber[g] = groups_kept++;
    }
    for (auto& q : round)
      if (renumber[q.group] >= 0) q.group = renumber[q.group], seqs.push_back(std::move(q));
    if (!a.dynamic_sampling) break;
    if (a.max_gen_batches > 0 && m["rollout/gen_batches"] >= static_cast<double>(a.max_gen_batches)) break;
  }
  const double rounds = m["rollout/gen_batches"];
  for (auto& [k, v] : m)
    if (k.rfind("reward/", 0) == 0) v /= rounds;
  std::array<double, 3> totals{all_reward_sum, all_correct, all_count};
  comm_->all_reduce(totals.data(), totals.size(), dist::DType::kFloat64, dist::ReduceOp::kSum);
  all_reward_sum = totals[0], all_correct = totals[1], all_count = totals[2];
  m["rollout/zero_std_group_frac"] = groups_seen ? static_cast<double>(zero_std_groups) / groups_seen : 0.0;
  m["reward/all_mean"] = all_count ? all_reward_sum / all_count : 0.0;
  m["accuracy"] = all_count ? all_correct / all_count : 0.0;
  if (groups_kept == 0) log::warn("step ", step_ + 1, ": dynamic sampling kept no group within algo.max_gen_batches");
  return seqs;

}

// MASA (spec 2.3, 3): each prompt's solution rollouts and meta rollouts form separate groups, trained together in
// one update. Without masa.efficient, or before masa.efficient_start_step, both are generated for every prompt.
// After it the meta rollouts come first: prompts whose predicted pass rates agree on 0 or 1 are gated out (their
// meta rollouts leave the update), and the rest are solved under a per-prompt early cutoff.
std::vector<Sequence> Trainer::masa_rollouts(std::map<std::string, double>& m, double& t_generate, double& t_score) {
  const auto& c = cfg_.masa;
  const int64_t limit = cfg_.rollout.max_new_tokens;
  const bool efficient = c.efficient && step_ >= c.efficient_start_step;
  const auto indices = sampler_->next(cfg_.train.prompts_per_step);
  const int64_t B = static_cast<int64_t>(indices.size());
  const uint64_t seed = mix(static_cast<uint64_t>(cfg_.rollout.seed), static_cast<uint64_t>(step_));
  const auto parse = masa::parse_options(c, limit);
  m["rollout/gen_batches"] = 1;

  // Meta prompts (in the efficient phase also their rollouts and predictions), for this rank's share of the
  // prompts. Per-prompt vectors are indexed by the prompt's place b in the step (filled for this rank's b only).
  // All of a step's rollouts draw from one seed; RNG streams are keyed on global places: solution prompt k on k,
  // meta prompt b on B + b, audited gated prompt k on 2B + k.
  const uint64_t rollout_seed = mix(seed, 0x501ull);
  const auto mine = my_share(B);
  std::vector<bool> is_mine(B, false);
  std::vector<rollout::Prompt> meta_prompts;
  for (int64_t b : mine) {
    meta_prompts.push_back({prepared_[indices[b]].meta_ids, c.meta_max_new_tokens, B + b, c.meta_n});
    is_mine[b] = true;
  }
  std::vector<rollout::Sample> meta_samples;
  std::vector<std::vector<masa::MetaPrediction>> predictions(B);
  std::vector<std::vector<std::string>> meta_texts(B);
  auto predict = [&] {
    for (auto& s : meta_samples) {
      s.prompt_index = mine[s.prompt_index];
      meta_texts[s.prompt_index].push_back(tok_->decode(s.tokens, /*skip_special=*/true));
      predictions[s.prompt_index].push_back(masa::parse_meta(meta_texts[s.prompt_index].back(), parse));
    }
  };
  double t_meta = 0;
  auto t0 = Clock::now();
  if (efficient) {
    meta_samples = generate(meta_prompts, c.meta_n, rollout_seed);
    t_meta = seconds_since(t0);
    predict();
  }

  // Gating and cutoff. A sample of gated prompts is still solved at the full limit, outside the update, to
  // measure the gate against the true zero-variance prompts.
  // A side of the gate that masa.gate_min_precision has stopped withholds its verdict: the prompt is solved, and
  // its outcome checks that side again.
  std::vector<bool> gated(B, false), audited(B, false), withheld(B, false), verdict_solved(B, false);
  std::vector<int64_t> cap(B, limit);
  int64_t gated_on_solved = 0;
  // masa.cutoff_guard_max_over_cap: last step's rollouts ran past their cutoffs too often to trust this step's.
  const bool measure_over_cap = c.efficient && c.cutoff_scale > 0;
  const bool cutoff_held =
      efficient && measure_over_cap && cutoff_over_cap_ && *cutoff_over_cap_ > c.cutoff_guard_max_over_cap;
  const std::array<bool, 2> side_stopped{gate_check_.suspended(false), gate_check_.suspended(true)};
  if (efficient) {
    const auto gate_options = masa::gate_options(c);
    for (int64_t b : mine) {
      const auto d = masa::gate(predictions[b], gate_options);
      verdict_solved[b] = d.predicted_solved;
      withheld[b] = d.gated && side_stopped[d.predicted_solved];
      gated[b] = d.gated && !withheld[b];
      gated_on_solved += gated[b] && d.predicted_solved;
      if (gated[b]) {
        audited[b] = static_cast<double>(mix(seed, 0xA0D1ull + static_cast<uint64_t>(b)) >> 11) * 0x1.0p-53 <
                     c.gate_audit_frac;
      } else if (!withheld[b] && !cutoff_held) {
        // (A withheld prompt is solved as an audit is, at the full limit and with no hint: a fair check.)
        cap[b] = masa::cutoff_tokens(predictions[b], c.cutoff_scale, c.cutoff_min_tokens, limit);
      }
    }
    // Every rank learns every prompt's verdict: solution groups are numbered over the kept prompts of all ranks.
    std::vector<int64_t> flags(static_cast<size_t>(2 * B), 0);
    for (int64_t b : mine) flags[b] = gated[b], flags[B + b] = audited[b];
    comm_->all_reduce(flags.data(), flags.size(), dist::DType::kInt64, dist::ReduceOp::kSum);
    for (int64_t b = 0; b < B; ++b) gated[b] = flags[b] != 0, audited[b] = flags[B + b] != 0;
  }

  // Solution rollouts: the kept prompts (under their cutoff) and the audited gated ones. An audit that only
  // measures gets its own call, timed apart; one that steers the gate is part of training and shares the call.
  // Prompt k of the step's kept ones is solution group k (meta group K_all + k) on whichever rank holds it.
  std::vector<int64_t> solved_prompt;  // prompt b of each of this rank's solution prompts
  std::vector<int64_t> solved_group;   // ... and its place k among all ranks' kept prompts
  std::vector<rollout::Prompt> sol_prompts, audit_prompts;
  int64_t notion_hints = 0;
  std::vector<int64_t> audit_prompt;
  int64_t K_all = 0, audits_all = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& prep = prepared_[indices[b]];
    const int64_t k_all = gated[b] ? audits_all++ : K_all++;
    if (!is_mine[b]) continue;
    if (gated[b]) {
      if (audited[b]) audit_prompts.push_back({prep.prompt_ids, limit, 2 * B + k_all}), audit_prompt.push_back(b);
      continue;
    }
    std::vector<int32_t> ids = prep.prompt_ids;
    if (efficient && c.notion_feed_in && !withheld[b]) {
      // One meta rollout's notions, picked by the step's seed (the official code picks one at random).
      std::vector<const std::vector<std::string>*> with_notions;
      for (const auto& p : predictions[b])
        if (p.notions && !p.notions->empty()) with_notions.push_back(&*p.notions);
      if (!with_notions.empty()) {
        const auto& notions = *with_notions[mix(seed, static_cast<uint64_t>(b)) % with_notions.size()];
        ids = format_->encode(masa::with_notion_hint(prep.problem->prompt, notions));
        ++notion_hints;
      }
    }
    sol_prompts.push_back({std::move(ids), cap[b], k_all});
    solved_prompt.push_back(b);
    solved_group.push_back(k_all);
  }
  // One generation call for two prompt lists: the decode steps of one overlap the other's instead of adding to
  // them, and the samples come back split (each list's own prompt indices).
  auto generate_together = [&](const std::vector<rollout::Prompt>& first, const std::vector<rollout::Prompt>& second,
                               std::vector<rollout::Sample>& first_samples,
                               std::vector<rollout::Sample>& second_samples) {
    auto both = first;
    both.insert(both.end(), second.begin(), second.end());
    const auto n_first = static_cast<int64_t>(first.size());
    for (auto& s : generate(both, cfg_.rollout.n, rollout_seed)) {
      if (s.prompt_index < n_first) {
        first_samples.push_back(std::move(s));
      } else {
        s.prompt_index -= n_first;
        second_samples.push_back(std::move(s));
      }
    }
  };
  // With the gate checking itself the audit steers the gate, so its time counts (its rollouts still stay out of
  // the update); otherwise it only measures.
  const bool audit_checks_gate = c.gate_min_precision > 0;
  t0 = Clock::now();
  std::vector<rollout::Sample> sol_samples, audit_samples;
  if (!efficient) {
    // Spec 3.1 phase 1: nothing waits on the predictions, so meta and solution rollouts share one call.
    generate_together(meta_prompts, sol_prompts, meta_samples, sol_samples);
  } else if (audit_checks_gate) {
    generate_together(sol_prompts, audit_prompts, sol_samples, audit_samples);
  } else {
    sol_samples = generate(sol_prompts, cfg_.rollout.n, rollout_seed);
  }
  const double t_solve = seconds_since(t0);
  if (!efficient) predict();
  t0 = Clock::now();
  if (!audit_checks_gate) audit_samples = generate(audit_prompts, cfg_.rollout.n, rollout_seed);
  const double t_audit = seconds_since(t0);
  t_generate += t_meta + t_solve;

  // Score the solutions (the configured reward modules), then judge each kept prompt's meta rollouts against them.
  t0 = Clock::now();
  auto problems_of = [&](const std::vector<int64_t>& prompt_of) {
    std::vector<int64_t> out;
    for (int64_t b : prompt_of) out.push_back(indices[b]);
    return out;
  };
  const auto sol_groups = solution_groups(problems_of(solved_prompt), sol_prompts, sol_samples);
  const auto sol_scores = rewards_->score(sol_groups);
  for (const auto& [k, v] : sol_scores.metrics) m[k] = v;
  const auto audit_groups = solution_groups(problems_of(audit_prompt), audit_prompts, audit_samples);
  const auto audit_scores = audit_groups.empty() ? reward::Scores{} : rewards_->score(audit_groups);

  const int64_t K = static_cast<int64_t>(solved_prompt.size());
  std::vector<std::shared_ptr<reward::SolutionEvidence>> evidence(K);
  std::vector<reward::Group> meta_groups(K);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t b = solved_prompt[k];
    auto e = std::make_shared<reward::SolutionEvidence>();
    e->problem = prepared_[indices[b]].problem->prompt;
    for (size_t r = 0; r < sol_groups[k].responses.size(); ++r) {
      e->texts.push_back(sol_groups[k].responses[r].text);
      e->lengths.push_back(static_cast<int64_t>(sol_groups[k].responses[r].ids.size()));
      e->correct.push_back(!sol_scores.correct.empty() && sol_scores.correct[k][r]);
    }
    evidence[k] = e;
    auto& g = meta_groups[k];
    g.prompt = c.notion_exclude == "meta_prompt" ? prepared_[indices[b]].meta_prompt_text : e->problem;
    g.ground_truth = prepared_[indices[b]].problem->answer;
    g.max_new_tokens = c.meta_max_new_tokens;
    g.solutions = e;
  }
  std::vector<int64_t> kept_index(B, -1);  // b -> this rank's solution prompt k
  for (int64_t k = 0; k < K; ++k) kept_index[solved_prompt[k]] = k;
  for (const auto& s : meta_samples)
    if (kept_index[s.prompt_index] >= 0)
      meta_groups[kept_index[s.prompt_index]].responses.push_back(
          {meta_texts[s.prompt_index][s.sample_index], s.tokens, s.finish == rollout::FinishReason::kLength});
  auto meta_scores = meta_rewards_->score(meta_groups);
  for (const auto& [k, v] : meta_scores.metrics) m[k == "reward/mean" ? "meta/reward_mean" : k] = v;
  t_score += seconds_since(t0);

  // Sequences: solution groups 0..K_all-1, meta groups K_all..2K_all-1 (each normalised on its own).
  std::vector<Sequence> seqs;
  std::vector<double> correct_count(K, 0.0);
  double sol_tokens = 0, meta_tokens = 0, sol_reward = 0, sol_truncated = 0, cut_truncated = 0, meta_truncated = 0;
  // Each kept prompt's cutoff, applied or not; a rollout runs past it when the cutoff stops it or would have.
  double over_cap = 0;
  std::vector<int64_t> would_cap(K, limit);
  if (measure_over_cap)
    for (int64_t k = 0; k < K; ++k)
      would_cap[k] = masa::cutoff_tokens(predictions[solved_prompt[k]], c.cutoff_scale, c.cutoff_min_tokens, limit);
  for (const auto& s : sol_samples) {
    const auto length = static_cast<int64_t>(s.tokens.size()), k_cap = would_cap[s.prompt_index];
    over_cap += k_cap < limit && (length > k_cap || (s.finish == rollout::FinishReason::kLength && length == k_cap));
    Sequence q = sequence_of(s, sol_prompts[s.prompt_index].ids, solved_group[s.prompt_index]);
    q.score = sol_scores.rewards[s.prompt_index][s.sample_index];
    q.correct = !sol_scores.correct.empty() && sol_scores.correct[s.prompt_index][s.sample_index];
    correct_count[s.prompt_index] += q.correct;
    sol_tokens += static_cast<double>(q.response.size());
    sol_reward += q.score;
    sol_truncated += q.truncated;
    cut_truncated += q.truncated && sol_prompts[s.prompt_index].max_new_tokens < limit;
    seqs.push_back(std::move(q));
  }
  double meta_kept_tokens = 0, meta_kept = 0;
  for (const auto& s : meta_samples) {
    meta_tokens += static_cast<double>(s.tokens.size());
    const int64_t k = kept_index[s.prompt_index];
    if (k < 0) continue;  // a gated prompt: no solutions to judge it against
    Sequence q = sequence_of(s, prepared_[indices[s.prompt_index]].meta_ids, K_all + solved_group[k]);
    q.meta = true;
    q.score = meta_scores.rewards[k][s.sample_index];
    meta_kept_tokens += static_cast<double>(q.response.size());
    meta_truncated += q.truncated;
    ++meta_kept;
    seqs.push_back(std::move(q));
  }

  // Metrics: each path apart, the gate against the truth, the cutoff's savings, the meta path's token share.
  // Zero variance: all G verdicts equal. Audited gated prompts give precision; kept prompts that turn out zero
  // variance are the gate's misses (not the withheld ones: the gate did call those). Counts are summed over the
  // ranks first.
  const auto zero_variance = [&](const std::vector<bool>& v) {
    return std::all_of(v.begin(), v.end(), [&](bool x) { return x == v.front(); });
  };
  double correct_total = 0, audited_zero = 0, kept_zero = 0, budget_saved = 0, cap_sum = 0;
  for (double cc : correct_count) correct_total += cc;
  for (const auto& v : audit_scores.correct) audited_zero += zero_variance(v);
  // The audited gated prompts' predicted pass rates against their audit, as reward/masa/abs_pass_error judges
  // the kept ones: once gating starts, that metric leaves out the gated prompts, the confidently predicted.
  double audited_error = 0, audited_predictions = 0;
  for (size_t j = 0; j < audit_prompt.size() && j < audit_scores.correct.size(); ++j) {
    const auto& v = audit_scores.correct[j];
    const double p = static_cast<double>(std::count(v.begin(), v.end(), true)) / std::max<double>(1, v.size());
    for (const auto& prediction : predictions[audit_prompt[j]])
      if (prediction.pass_rate) audited_error += std::fabs(p - *prediction.pass_rate), ++audited_predictions;
  }
  for (int64_t k = 0; k < K; ++k) {
    kept_zero += !withheld[solved_prompt[k]] && zero_variance(evidence[k]->correct);
    cap_sum += static_cast<double>(cap[solved_prompt[k]]);
    budget_saved += static_cast<double>((limit - cap[solved_prompt[k]]) * cfg_.rollout.n);
  }
  std::array<double, 16> sums{correct_total, static_cast<double>(sol_samples.size()), sol_reward, sol_tokens,
                              sol_truncated, cut_truncated, meta_kept_tokens, meta_kept, meta_truncated, meta_tokens,
                              static_cast<double>(notion_hints), audited_zero, kept_zero, audited_error,
                              audited_predictions, over_cap};
  comm_->all_reduce(sums.data(), sums.size(), dist::DType::kFloat64, dist::ReduceOp::kSum);
  correct_total = sums[0], sol_reward = sums[2], sol_tokens = sums[3], sol_truncated = sums[4];
  cut_truncated = sums[5], meta_kept_tokens = sums[6], meta_kept = sums[7], meta_truncated = sums[8];
  meta_tokens = sums[9], audited_zero = sums[11], kept_zero = sums[12];
  if (sums[14] > 0) m["masa/gate_audited_abs_pass_error"] = sums[13] / sums[14];
  const double n_sol = std::max<double>(1, sums[1]);
  std::array<double, 2> caps{cap_sum, budget_saved};
  comm_->all_reduce(caps.data(), caps.size(), dist::DType::kFloat64, dist::ReduceOp::kSum);
  m["accuracy"] = correct_total / n_sol;
  m["solution/reward_mean"] = sol_reward / n_sol;
  m["solution/response_length"] = sol_tokens / n_sol;
  m["solution/truncated_frac"] = sol_truncated / n_sol;
  m["meta/response_length"] = meta_kept > 0 ? meta_kept_tokens / meta_kept : 0.0;
  m["meta/truncated_frac"] = meta_kept > 0 ? meta_truncated / meta_kept : 0.0;
  m["masa/meta_token_share"] = meta_tokens + sol_tokens > 0 ? meta_tokens / (meta_tokens + sol_tokens) : 0.0;
  m["masa/efficient"] = efficient;
  if (measure_over_cap && sums[1] > 0) {
    cutoff_over_cap_ = sums[15] / sums[1];
    m["masa/cutoff_over_cap_frac"] = *cutoff_over_cap_;
  }
  if (c.notion_feed_in) m["masa/notion_hints"] = sums[10];
  if (efficient) m["time/meta_generate"] = t_meta, m["time/solution_generate"] = t_solve;
  if (!audit_checks_gate) m["time/masa_audit"] = t_audit;
  if (efficient) {
    const auto n_gated = static_cast<double>(std::count(gated.begin(), gated.end(), true));
    const auto n_audited = static_cast<double>(std::count(audited.begin(), audited.end(), true));
    gated_on_solved = static_cast<int64_t>(dist::all_reduce_sum(*comm_, static_cast<double>(gated_on_solved)));
    m["masa/gated_frac"] = n_gated / static_cast<double>(B);
    m["masa/gated_on_solved_frac"] = static_cast<double>(gated_on_solved) / static_cast<double>(B);
    m["masa/gated"] = n_gated;
    m["masa/gate_audited"] = n_audited;
    m["masa/gate_audited_zero_var"] = audited_zero;
    m["masa/kept"] = static_cast<double>(K_all);
    m["masa/kept_zero_var"] = kept_zero;
    if (n_audited > 0) {
      const double precision = audited_zero / n_audited;
      m["masa/gate_precision"] = precision;
      const double true_positives = precision * n_gated;
      if (true_positives + kept_zero > 0) m["masa/gate_recall"] = true_positives / (true_positives + kept_zero);
    }
    // masa.gate_min_precision: the step's checked verdicts, recorded in prompt order on every rank, as the code
    // 1 + 2 x side + zero-variance.
    if (c.gate_min_precision > 0) {
      std::vector<int64_t> checks(B, 0);
      const auto check = [&](int64_t b, const std::vector<bool>& correct) {
        checks[b] = 1 + 2 * static_cast<int64_t>(verdict_solved[b]) + zero_variance(correct);
      };
      for (size_t j = 0; j < audit_prompt.size() && j < audit_scores.correct.size(); ++j)
        check(audit_prompt[j], audit_scores.correct[j]);
      double n_withheld = 0;
      for (int64_t k = 0; k < K; ++k)
        if (withheld[solved_prompt[k]]) check(solved_prompt[k], evidence[k]->correct), ++n_withheld;
      comm_->all_reduce(checks.data(), checks.size(), dist::DType::kInt64, dist::ReduceOp::kSum);
      for (int64_t code : checks)
        if (code > 0) gate_check_.add(code >= 3, (code - 1) % 2 == 1);
      m["masa/gate_withheld"] = dist::all_reduce_sum(*comm_, n_withheld);
      m["masa/gate_stopped_unsolved"] = side_stopped[0];
      m["masa/gate_stopped_solved"] = side_stopped[1];
      if (const auto p = gate_check_.precision(false)) m["masa/gate_checked_precision_unsolved"] = *p;
      if (const auto p = gate_check_.precision(true)) m["masa/gate_checked_precision_solved"] = *p;
    }
    if (c.gated_loss_norm == "counted") {
      // Each gated prompt: its meta rollouts as generated, and n solutions of its mean predicted length.
      for (const auto& s : meta_samples)
        if (gated[s.prompt_index]) gated_absent_[0] += static_cast<double>(s.tokens.size()), ++gated_absent_[1];
      for (int64_t b : mine)
        if (gated[b]) {
          const int64_t length = masa::cutoff_tokens(predictions[b], 1.0, 1, limit);
          gated_absent_[0] += static_cast<double>(length * cfg_.rollout.n);
          gated_absent_[1] += static_cast<double>(cfg_.rollout.n);
        }
      comm_->all_reduce(gated_absent_.data(), gated_absent_.size(), dist::DType::kFloat64, dist::ReduceOp::kSum);
      m["masa/gated_absent_tokens"] = gated_absent_[0];
    }
    m["masa/cutoff_mean"] = K_all ? caps[0] / static_cast<double>(K_all) : 0.0;
    m["masa/cutoff_budget_saved"] = caps[1];
    m["masa/cutoff_truncated_frac"] = cut_truncated / n_sol;
    m["masa/cutoff_held"] = cutoff_held;
  }

  // Expert meta trajectories (spec 3.5): each prompt's best-notion meta rollout with its JSON corrected.
  if (c.expert_sft.enabled) {
    // An unsolved prompt's target keeps its predicted length, clamped as tolerant parsing would have.
    const auto unsolved_length_range = c.expert_sft.unsolved == "zero"
                                           ? std::optional(std::pair(parse.min_length, parse.max_length))
                                           : std::nullopt;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = solved_prompt[k];
      const auto& correct = evidence[k]->correct;
      int64_t best = -1;
      if (std::find(correct.begin(), correct.end(), true) == correct.end()) {
        // Unsolved: the true pass rate is 0 and every notion score is 0, so the notion threshold cannot pick; take
        // the first rollout that predicted a length. Skipped when the early cutoff stopped a rollout: the 0 may be
        // the cutoff's rather than the problem's.
        const auto& rs = sol_groups[k].responses;
        const bool cut = cap[b] < limit && std::any_of(rs.begin(), rs.end(), [](const auto& r) { return r.truncated; });
        if (c.expert_sft.unsolved != "zero" || cut) continue;
        for (size_t r = 0; r < predictions[b].size() && best < 0; ++r)
          if (predictions[b][r].length) best = static_cast<int64_t>(r);
        if (best < 0) continue;
      } else {
        const std::string_view excluded(meta_groups[k].prompt);
        double best_notion = -1;
        for (size_t r = 0; r < predictions[b].size(); ++r) {
          const auto& p = predictions[b][r];
          const double score = p.notions ? masa::notion_score(*p.notions, excluded, *evidence[k]) : 0.0;
          if (score > best_notion) best_notion = score, best = static_cast<int64_t>(r);
        }
        if (best < 0 || best_notion < c.expert_sft.min_notion_score) continue;
      }
      const auto target =
          masa::expert_target(predictions[b][best], *evidence[k], c.expert_sft.target_length == "midpoint",
                              unsolved_length_range);
      if (!target) continue;
      SftExample ex{prepared_[indices[b]].meta_ids, tok_->encode(*target, false), step_ * B + solved_group[k]};
      if (tok_->eos_id()) ex.target.push_back(*tok_->eos_id());
      expert_buffer_.push_back(std::move(ex));
    }
    m["masa/expert_buffer"] = dist::all_reduce_sum(*comm_, static_cast<double>(expert_buffer_.size()));
  }
  return seqs;
}

std::map<std::string, double> Trainer::grpo_step() {
  const auto& a = cfg_.algo;
  const auto& t = cfg_.train;
  const auto step_start = Clock::now();
  std::map<std::string, double> m;
  double t_generate = 0, t_score = 0;
  gated_absent_ = {0, 0};

  // 1-3. Sample prompts, generate and score their rollouts.
  std::vector<Sequence> seqs =
      cfg_.masa.enabled ? masa_rollouts(m, t_generate, t_score) : grpo_rollouts(m, t_generate, t_score);
  // This rank's sequences are its share of the step's; counts and normalisers below are the global ones.
  const int64_t N = static_cast<int64_t>(seqs.size());
  const int64_t N_global = static_cast<int64_t>(dist::all_reduce_sum(*comm_, static_cast<double>(N)));
  if (N_global == 0) {
    log::warn("step ", step_ + 1, ": no rollout group left for the update");
    m["train/empty_step"] = 1;
    m["time/generate"] = t_generate, m["time/score"] = t_score, m["time/step"] = seconds_since(step_start);
    return m;
  }

  std::vector<int64_t> all(N);
  std::iota(all.begin(), all.end(), 0);
  const auto micros = micro_batches(seqs, all, t.micro_batch_size, t.micro_batch_tokens);
  const double temperature = cfg_.rollout.temperature > 0 ? cfg_.rollout.temperature : 1.0;
  const bool single_update = t.ppo_epochs == 1 && t.mini_batch_size >= N_global;

  // 4. Old and reference log-probs, when the update's own forward cannot stand in for them.
  auto t0 = Clock::now();
  const bool g2rl = cfg_.g2rl.enabled;
  const bool need_old_before = a.use_kl_in_reward || g2rl;  // both change rewards before the advantages
  bool old_from_update = false;
  if (t.old_logprob == "rollout") {
    for (auto& q : seqs) q.old_logp = torch::tensor(q.rollout_logprobs);
  } else if (t.old_logprob == "auto" && single_update && !need_old_before) {
    old_from_update = true;  // on-policy, one update: ratio is exactly 1 and the update's forward is the old pass
  } else {
    c10::NoGradGuard no_grad;
    for (const auto& members : micros) {
      const auto mb = make_micro(seqs, members);
      if (g2rl) {
        const auto [grid, features] = response_logprobs_features(*model_, mb, temperature, bf16_);
        store_rows(seqs, members, grid, &Sequence::old_logp);
        for (size_t r = 0; r < members.size(); ++r) seqs[members[r]].features = features[static_cast<int64_t>(r)];
      } else {
        store_rows(seqs, members, response_logprobs(*model_, mb, temperature, bf16_).logp, &Sequence::old_logp);
      }
    }
  }
  if (g2rl && t.old_logprob == "rollout") {
    // The sampler's log-probs skip the trainer forward; G²RL still needs one (forward only) for Φ.
    c10::NoGradGuard no_grad;
    for (const auto& members : micros) {
      const auto features = response_logprobs_features(*model_, make_micro(seqs, members), temperature, bf16_).second;
      for (size_t r = 0; r < members.size(); ++r) seqs[members[r]].features = features[static_cast<int64_t>(r)];
    }
  }
  if (reference_) {
    c10::NoGradGuard no_grad;
    for (const auto& members : micros) {
      const auto mb = make_micro(seqs, members);
      store_rows(seqs, members, response_logprobs(*reference_, mb, temperature, bf16_).logp, &Sequence::ref_logp);
    }
  }
  const double t_old = seconds_since(t0);

  // G²RL: the verdicts as ±1, scaled by each response's novelty among its group's features.
  if (g2rl && N > 0) {
    std::vector<at::Tensor> features;
    std::vector<float> base;
    std::vector<int64_t> groups;
    for (const auto& q : seqs) {
      features.push_back(q.features);
      base.push_back(q.correct ? 1.f : -1.f);
      groups.push_back(q.group);
    }
    g2rl::ShapingOptions o;
    o.mode = cfg_.g2rl.mode;
    o.lambda = cfg_.g2rl.lambda;
    o.clip = cfg_.g2rl.clip;
    o.nu_norm = cfg_.g2rl.nu_norm;
    o.zero_var_groups = cfg_.g2rl.zero_var_groups;
    const auto shaped =
        g2rl::shape_rewards(torch::stack(features), torch::tensor(base), torch::tensor(groups), o, &m);
    for (int64_t i = 0; i < N; ++i) seqs[i].score = shaped[i].item<double>();
  }

  // In-reward KL (verl's apply_kl_penalty): the sequence's score loses coef x sum_t KL(old || ref).
  if (a.use_kl_in_reward) {
    double kl_sum = 0;
    for (auto& q : seqs) {
      const double kl = algo::kl_penalty(q.old_logp, q.ref_logp, a.kl_in_reward_type).sum().item<double>();
      q.score -= a.kl_in_reward_coef * kl;
      kl_sum += kl;
    }
    m["reward/kl_in_reward"] = N ? kl_sum / N : 0.0;
  }

  // 5. Group advantages.
  // Each group lives on one rank, so the group statistics need no communication.
  {
    std::vector<float> scores(N);
    std::vector<int64_t> groups(N);
    for (int64_t i = 0; i < N; ++i) scores[i] = static_cast<float>(seqs[i].score), groups[i] = seqs[i].group;
    algo::AdvantageOptions o;
    o.norm_by_std = a.norm_adv_by_std;
    o.unbiased_std = a.std_mode == "unbiased";
    o.epsilon = a.adv_epsilon;
    o.epsilon_inside_sqrt = a.epsilon_inside_sqrt;
    if (N > 0) {
      const auto adv = algo::advantage_estimator(a.adv_estimator)(torch::tensor(scores), torch::tensor(groups), o);
      for (int64_t i = 0; i < N; ++i) seqs[i].advantage = adv[i].item<float>();
    }
    std::array<double, 2> moments{0, 0};
    for (float s : scores) moments[0] += s, moments[1] += static_cast<double>(s) * s;
    comm_->all_reduce(moments.data(), 2, dist::DType::kFloat64, dist::ReduceOp::kSum);
    const double n = static_cast<double>(N_global), mean = moments[0] / n;
    m["reward/mean"] = mean;
    m["reward/std"] = N_global > 1 ? std::sqrt(std::max(0.0, (moments[1] - n * mean * mean) / (n - 1))) : 0.0;
  }

  // 6. PPO-clip updates: mini-batches of sequences, each accumulated over micro-batches, normalised by the
  // mini-batch's global token and sequence counts so the split never changes the gradient.
  t0 = Clock::now();
  algo::PolicyLossOptions plo{a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c};
  const auto& policy_loss = algo::policy_loss("vanilla");
  Accumulator acc;
  double resp_tokens = 0, prompt_tokens = 0, max_len = 0, truncated = 0;
  double solution_tokens = 0;
  for (const auto& q : seqs) {
    resp_tokens += static_cast<double>(q.response.size());
    if (!q.meta) solution_tokens += static_cast<double>(q.response.size());
    prompt_tokens += static_cast<double>(q.prompt.size());
    max_len = std::max(max_len, static_cast<double>(q.response.size()));
    truncated += q.truncated;
  }
  // Mini-batch k is the global batch's positions [k M, (k+1) M); each rank trains its sequences among them.
  const auto order = global_order(seqs);
  const int64_t n_minis = (N_global + t.mini_batch_size - 1) / t.mini_batch_size;
  std::vector<std::vector<int64_t>> minis(static_cast<size_t>(n_minis));
  for (int64_t i = 0; i < N; ++i) minis[static_cast<size_t>(order[i] / t.mini_batch_size)].push_back(i);
  int64_t updates = 0;
  double forward_slots = 0, n_micro = 0;  // the update's token slots, padding included, and its micro-batches
  // Gated MASA prompts' absent tokens and sequences, spread over the mini-batches in proportion to their own.
  std::array<double, 2> batch_counts{resp_tokens, 0};
  for (const auto& q : seqs) batch_counts[1] += q.response.empty() ? 0 : 1;
  if (gated_absent_[0] > 0)
    comm_->all_reduce(batch_counts.data(), 2, dist::DType::kFloat64, dist::ReduceOp::kSum);
  for (int64_t epoch = 0; epoch < t.ppo_epochs; ++epoch) {
    for (const auto& mini : minis) {
      algo::AggregationScale scale;
      std::array<double, 2> counts{0, 0};  // the mini-batch's tokens and non-empty sequences over all ranks
      for (int64_t i : mini) {
        counts[0] += static_cast<double>(seqs[i].response.size());
        counts[1] += seqs[i].response.empty() ? 0 : 1;
      }
      comm_->all_reduce(counts.data(), 2, dist::DType::kFloat64, dist::ReduceOp::kSum);
      for (int j = 0; j < 2; ++j)
        if (gated_absent_[j] > 0 && batch_counts[j] > 0) counts[j] *= 1.0 + gated_absent_[j] / batch_counts[j];
      scale.global_tokens = counts[0];
      scale.global_sequences = counts[1];
      scale.loss_scale_factor =
          a.loss_scale_factor > 0 ? a.loss_scale_factor : static_cast<double>(cfg_.rollout.max_new_tokens);
      double loss_value = 0;
      for (const auto& members : micro_batches(seqs, mini, t.micro_batch_size, t.micro_batch_tokens)) {
        const auto mb = make_micro(seqs, members);
        forward_slots += static_cast<double>(mb.ids.numel()), ++n_micro;
        const auto out = response_logprobs(*model_, mb, temperature, bf16_);
        const auto old = old_from_update ? out.logp.detach() : gather_rows(seqs, members, mb.width, &Sequence::old_logp);
        std::vector<float> adv_rows;
        for (int64_t i : members) adv_rows.push_back(seqs[i].advantage);
        const auto adv = torch::tensor(adv_rows).unsqueeze(1).expand({mb.rows, mb.width});
        const auto terms = policy_loss(out.logp, old, adv, plo);
        auto loss = algo::aggregate_loss(terms.token_loss, mb.mask, a.loss_agg_mode, scale);
        const double tokens = mb.mask.sum().item<double>();
        if (a.entropy_coeff > 0)
          loss = loss - a.entropy_coeff * algo::aggregate_loss(out.entropy, mb.mask, a.loss_agg_mode, scale);
        if (a.use_kl_loss) {
          const auto ref = gather_rows(seqs, members, mb.width, &Sequence::ref_logp);
          const auto kl = algo::kl_penalty(out.logp, ref, a.kl_loss_type);
          loss = loss + a.kl_loss_coef * algo::aggregate_loss(kl, mb.mask, a.loss_agg_mode, scale);
          acc.add("actor/kl", algo::masked_mean(kl.detach(), mb.mask).item<double>(), tokens);
        }
        loss.backward();
        loss_value += loss.item<double>();
        const auto f = mb.mask;
        acc.add("actor/entropy", algo::masked_mean(out.entropy.detach(), f).item<double>(), tokens);
        if (cfg_.masa.enabled) {
          // Each path apart: the mixed batch's figures are polluted by the other path (spec 6.3).
          std::vector<float> is_meta;
          for (int64_t i : members) is_meta.push_back(seqs[i].meta ? 1.f : 0.f);
          const auto meta_rows = torch::tensor(is_meta).unsqueeze(1) * f;
          for (const auto& [name, rows] : {std::pair{"meta", meta_rows}, std::pair{"solution", f - meta_rows}}) {
            const double n = rows.sum().item<double>();
            if (n > 0)
              acc.add(std::string(name) + "/entropy", algo::masked_mean(out.entropy.detach(), rows).item<double>(), n);
          }
        }
        acc.add("actor/clip_frac_high", algo::masked_mean(terms.clipped_high.to(torch::kFloat), f).item<double>(), tokens);
        acc.add("actor/clip_frac_low", algo::masked_mean(terms.clipped_low.to(torch::kFloat), f).item<double>(), tokens);
        acc.add("actor/dual_clip_frac", algo::masked_mean(terms.dual_clipped.to(torch::kFloat), f).item<double>(), tokens);
        acc.add("actor/ppo_kl", algo::masked_mean(terms.neg_log_ratio, f).item<double>(), tokens);
        if (epoch == 0) {
          // How far the sampler's log-probs are from the trainer's on the same weights (they share the weights,
          // so only numerics separate them): the mismatch the Python stacks fight with.
          const auto rollout_lp = torch::zeros({mb.rows, mb.width});
          for (size_t r = 0; r < members.size(); ++r) {
            const auto& v = seqs[members[r]].rollout_logprobs;
            if (!v.empty())
              rollout_lp[static_cast<int64_t>(r)].narrow(0, 0, static_cast<int64_t>(v.size())).copy_(torch::tensor(v));
          }
          const auto base = old_from_update || t.old_logprob == "rollout" ? out.logp.detach() : old;
          acc.add("rollout/logprob_abs_diff", algo::masked_mean((rollout_lp - base).abs(), f).item<double>(), tokens);
        }
      }
      acc.add("actor/pg_loss", optimizer_step(m, loss_value, lr_), 1);
      ++updates;
    }
  }
  acc.write(m);
  const double t_update = seconds_since(t0);
  expert_sft_step(m);
  std::array<double, 5> totals{resp_tokens, prompt_tokens, truncated, forward_slots, n_micro};
  comm_->all_reduce(totals.data(), totals.size(), dist::DType::kFloat64, dist::ReduceOp::kSum);
  m["actor/updates"] = static_cast<double>(updates);
  m["actor/micro_batches"] = totals[4];
  // The share of the update's forward spent on padding (train.micro_batch_tokens lowers it).
  const double real_slots = static_cast<double>(t.ppo_epochs) * (totals[0] + totals[1]);
  m["actor/padding_frac"] = totals[3] > 0 ? 1.0 - real_slots / totals[3] : 0.0;
  m["response_length/mean"] = totals[0] / static_cast<double>(N_global);
  m["rollout/solution_tokens"] = solution_tokens;  // in the update (MASA's audit rollouts excluded)
  m["response_length/max"] = max_len;
  m["response_length/truncated_frac"] = totals[2] / static_cast<double>(N_global);
  m["time/generate"] = t_generate;
  m["time/score"] = t_score;
  m["time/old_logprob"] = t_old;
  m["time/update"] = t_update;
  m["time/step"] = seconds_since(step_start);
  m["throughput/tokens_per_s"] = (resp_tokens + prompt_tokens) / m["time/step"];
  m["throughput/generated_tokens_per_s"] = t_generate > 0 ? resp_tokens / t_generate : 0.0;
  merge_rank_metrics(m, static_cast<double>(N));
  return m;
}

// The gradient of one cross-entropy update on response tokens (token mean over all ranks' examples),
// micro-batched. Returns this rank's part of the loss. Collective.
double Trainer::sft_update(const std::vector<SftExample>& examples) {
  std::vector<Sequence> seqs;
  for (const auto& ex : examples) {
    Sequence q;
    q.prompt = ex.prompt;
    q.response = ex.target;
    seqs.push_back(std::move(q));
  }
  std::vector<int64_t> all(seqs.size());
  std::iota(all.begin(), all.end(), 0);
  algo::AggregationScale scale;
  scale.global_tokens = 0;
  for (const auto& q : seqs) scale.global_tokens += static_cast<double>(q.response.size());
  scale.global_tokens = dist::all_reduce_sum(*comm_, scale.global_tokens);
  double loss_value = 0;
  const auto& t = cfg_.train;
  for (const auto& members : micro_batches(seqs, all, t.micro_batch_size, t.micro_batch_tokens)) {
    const auto mb = make_micro(seqs, members);
    const auto out = response_logprobs(*model_, mb, 1.0, bf16_);
    const auto loss = algo::aggregate_loss(-out.logp, mb.mask, "token-mean", scale);
    loss.backward();
    loss_value += loss.item<double>();
  }
  return loss_value;
}

std::map<std::string, double> Trainer::sft_step() {
  const auto step_start = Clock::now();
  std::map<std::string, double> m;
  std::vector<SftExample> examples;
  double tokens_total = 0;
  const auto batch = sampler_->next(cfg_.train.prompts_per_step);
  for (int64_t j : my_share(static_cast<int64_t>(batch.size()))) {
    const auto& p = prepared_[batch[j]];
    examples.push_back({p.prompt_ids, p.target_ids});
    tokens_total += static_cast<double>(p.target_ids.size());
  }
  m["sft/loss"] = optimizer_step(m, sft_update(examples), lr_);
  m["time/step"] = seconds_since(step_start);
  m["throughput/tokens_per_s"] = tokens_total / m["time/step"];
  merge_rank_metrics(m, static_cast<double>(examples.size()));
  return m;
}

// MASA expert meta-SFT: when the buffer holds masa.expert_sft.buffer_size trajectories, one SFT step on them
// with the RL optimizer at masa.expert_sft.lr (as the official code reuses the actor's AdamW). The buffer is
// first-in-first-out over all ranks: each rank trains those of its trajectories among the oldest buffer_size.
// Collective.
void Trainer::expert_sft_step(std::map<std::string, double>& m) {
  const auto& e = cfg_.masa.expert_sft;
  if (!e.enabled) return;
  std::vector<int64_t> mine;
  for (const auto& ex : expert_buffer_) mine.push_back(ex.order);
  std::vector<int64_t> all;
  for (const auto& text : dist::all_gather_strings(*comm_, nlohmann::json(mine).dump()))
    for (int64_t k : nlohmann::json::parse(text).get<std::vector<int64_t>>()) all.push_back(k);
  if (static_cast<int64_t>(all.size()) < e.buffer_size) return;
  const auto t0 = Clock::now();
  std::nth_element(all.begin(), all.begin() + (e.buffer_size - 1), all.end());
  const int64_t newest = all[static_cast<size_t>(e.buffer_size - 1)];
  std::vector<SftExample> batch, rest;
  for (auto& ex : expert_buffer_) (ex.order <= newest ? batch : rest).push_back(std::move(ex));
  expert_buffer_ = std::move(rest);
  std::map<std::string, double> sft_metrics;
  const double loss = optimizer_step(sft_metrics, sft_update(batch), e.lr);
  m["masa/expert_sft_loss"] = loss;
  m["masa/expert_sft_grad_norm"] = sft_metrics["actor/grad_norm"];
  m["masa/expert_buffer"] = static_cast<double>(all.size() - static_cast<size_t>(e.buffer_size));
  m["time/masa_expert_sft"] = seconds_since(t0);
}

void Trainer::evaluate_into(std::map<std::string, double>& metrics, const std::string& prefix) {
  if (eval_set_.problems.empty()) return;
  model_->pack_for_inference(cfg_.rollout.max_batch);
  const rollout::Generator generator(*model_, cfg_.rollout.max_batch, cfg_.rollout.kv_budget_mb << 20, tok_.get());
  auto params = sampling(mix(static_cast<uint64_t>(cfg_.rollout.seed), 0xE7A1ull));  // the same draws every time
  params.n = cfg_.train.eval_n;
  AutocastScope autocast(bf16_);
  const auto s = evaluate(generator, *tok_, *format_, eval_set_.problems, params, cfg_.reward.math,
                          cfg_.data.max_prompt_tokens, {}, static_cast<uint64_t>(cfg_.train.seed), nullptr, {},
                          {comm_->rank(), comm_->world_size()});
  // Each rank graded its share of the problems: means weighted by problems and samples, the slowest time.
  std::array<double, 4> sums{s.pass_at_1 * static_cast<double>(s.problems), static_cast<double>(s.problems),
                             s.mean_response_tokens * static_cast<double>(s.samples), static_cast<double>(s.samples)};
  comm_->all_reduce(sums.data(), 4, dist::DType::kFloat64, dist::ReduceOp::kSum);
  double seconds = s.seconds;
  comm_->all_reduce(&seconds, 1, dist::DType::kFloat64, dist::ReduceOp::kMax);
  metrics[prefix + "accuracy"] = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
  metrics[prefix + "response_length"] = sums[3] > 0 ? sums[2] / sums[3] : 0.0;
  metrics[prefix + "seconds"] = seconds;
}

RunResult Trainer::run() {
  setup();
  resume();
  if (lead_) metrics_ = std::make_unique<io::MetricsWriter>(out_ / "metrics.jsonl");
  const auto& t = cfg_.train;
  log::info("training ", cfg_.model.path, " (", t.mode, ") for ", t.total_steps, " steps into ", out_.string(), "; ",
            prepared_.size(), " problems");
  RunResult result;
  if (step_ == 0 && t.eval_every > 0) {
    std::map<std::string, double> m;
    evaluate_into(m, "eval/");
    if (metrics_) metrics_->write(0, m);
    result.last_metrics = m;
    log::info("step 0: held-out accuracy ", m["eval/accuracy"]);
  }
  io::Progress bar("train", t.total_steps, io::Progress::resolve_mode(lead_ ? cfg_.log.progress : "off", 2),
                   cfg_.log.progress_interval_s, std::cerr);
  for (int64_t i = 0; i < step_; ++i) bar.advance();
  while (step_ < t.total_steps) {
    lr_ = learning_rate_at(t, step_);
    auto m = t.mode == "sft" ? sft_step() : grpo_step();
    ++step_;
    m["actor/lr"] = lr_;
    m["data/epoch"] = static_cast<double>(sampler_->cursor().epoch);
    m["data/skipped_long_prompts"] = static_cast<double>(skipped_long_prompts_);
    m["data/skipped_malformed"] = static_cast<double>(train_set_.skipped);
    m["train/nonfinite_total"] = static_cast<double>(nonfinite_total_);
    m["train/checkpoint_failures"] = static_cast<double>(checkpoint_failures_);
    if (t.eval_every > 0 && (step_ % t.eval_every == 0 || step_ == t.total_steps)) evaluate_into(m, "eval/");
    if (metrics_) metrics_->write(step_, m);
    result.last_metrics = m;
    bar.advance();
    std::ostringstream line;
    line << "step " << step_ << "/" << t.total_steps;
    for (const char* k : {"reward/mean", "accuracy", "sft/loss", "response_length/mean", "actor/entropy",
                          "actor/grad_norm", "eval/accuracy", "time/step"})
      if (m.count(k)) line << "  " << k << " " << m[k];
    log::info(line.str());
    if ((t.save_every > 0 && step_ % t.save_every == 0) || step_ == t.total_steps) save_checkpoint();
  }
  bar.finish();
  if (lead_) export_final();
  comm_->barrier();  // the others end only once the export is written
  result.steps_done = step_;
  result.export_dir = out_ / "export";
  log::info("export: ", result.export_dir.string(), "  metrics: ", (out_ / "metrics.jsonl").string());
  return result;
}

}  // namespace

double learning_rate_at(const config::TrainConfig& t, int64_t step) {
  if (t.warmup_steps > 0 && step < t.warmup_steps)
    return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  if (t.lr_schedule == "cosine") {
    const double span = static_cast<double>(std::max<int64_t>(1, t.total_steps - t.warmup_steps));
    const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
    return t.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return t.lr;
}

RunResult run(const config::Config& cfg, const RunOptions& options) {
  Trainer trainer(cfg, options);
  return trainer.run();
}

}  // namespace introspect::train
