#include "introspect/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>

#include "introspect/algo/core_algos.h"
#include "introspect/config/config.h"
#include "introspect/g2rl/g2rl.h"
#include "introspect/core/runtime.h"
#include "introspect/io/dataset.h"
#include "introspect/io/log.h"
#include "introspect/io/metrics.h"
#include "introspect/io/progress.h"
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
  float advantage = 0;
  at::Tensor old_logp, ref_logp;  // [response length] when computed
  at::Tensor features;            // G²RL's Φ [H], when enabled
};

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

std::vector<std::vector<int64_t>> chunks(const std::vector<int64_t>& items, int64_t size) {
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < items.size(); i += static_cast<size_t>(size))
    out.emplace_back(items.begin() + static_cast<std::ptrdiff_t>(i),
                     items.begin() + static_cast<std::ptrdiff_t>(std::min(items.size(), i + static_cast<size_t>(size))));
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
  const io::Problem* problem;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> target_ids;  // SFT
};

class Trainer {
 public:
  Trainer(const config::Config& cfg, const RunOptions& options) : cfg_(cfg), options_(options) {}
  RunResult run();

 private:
  void setup();
  void load_data();
  void resume();
  void save_checkpoint();
  void export_final();
  std::map<std::string, double> grpo_step();
  std::map<std::string, double> sft_step();
  void evaluate_into(std::map<std::string, double>& metrics, const std::string& prefix);
  rollout::SamplingParams sampling(uint64_t seed) const;
  void optimizer_step(std::map<std::string, double>& metrics, double loss_value);
  std::vector<Sequence> rollout_groups(const std::vector<int64_t>& indices, std::map<std::string, double>& metrics,
                                       double& t_generate, double& t_score);

  const config::Config& cfg_;
  RunOptions options_;
  fs::path out_;
  bool bf16_ = false;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::optional<tokenizer::PromptFormatter> format_;
  std::optional<model::CausalLM> model_, reference_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<reward::RewardSet> rewards_;
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
  out_ = cfg_.run.out_dir;
  fs::create_directories(out_);
  log::init(cfg_.log.level, out_ / "train.log");
  core::init_torch(cfg_.run.threads);
  if (cfg_.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  config::save_yaml(cfg_, out_ / "config.yaml");
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
  torch::optim::AdamWOptions opts(cfg_.train.lr);
  opts.weight_decay(cfg_.train.weight_decay).betas({0.9, 0.999}).eps(1e-8);
  optimizer_ = std::make_unique<torch::optim::AdamW>(model_->parameters(), opts);
  if (cfg_.train.mode == "grpo") rewards_ = std::make_unique<reward::RewardSet>(cfg_.reward);
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
    PreparedProblem prep{&p, format_->encode(p.prompt), {}};
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

void Trainer::save_checkpoint() {
  try {
    const auto dir = write_checkpoint(out_ / "checkpoints", step_, [&](const fs::path& tmp) {
      model_->save(tmp / "model");
      torch::serialize::OutputArchive archive;
      optimizer_->save(archive);
      torch::serialize::OutputArchive rng;
      rng.write("cpu_generator", at::detail::getDefaultCPUGenerator().get_state());
      archive.write("rng", rng);
      archive.save_to((tmp / "optimizer.pt").string());
      const auto cursor = sampler_->cursor();
      nlohmann::json state{{"step", step_},
                           {"data_epoch", cursor.epoch},
                           {"data_offset", cursor.offset},
                           {"nonfinite_in_a_row", nonfinite_in_a_row_},
                           {"nonfinite_total", nonfinite_total_},
                           {"lr", learning_rate_at(cfg_.train, step_)}};
      std::ofstream f(tmp / "state.json");
      f << state.dump(2) << "\n";
      if (!f.flush()) throw std::runtime_error("cannot write " + (tmp / "state.json").string());
    });
    prune_checkpoints(out_ / "checkpoints", cfg_.train.keep_last);
    log::info("checkpoint ", dir.string());
  } catch (const std::exception& e) {
    // A full disk or an I/O error loses this checkpoint only; the previous complete one stays.
    ++checkpoint_failures_;
    log::error("checkpoint at step ", step_, " failed, the previous one is kept: ", e.what());
  }
}

void Trainer::resume() {
  if (!options_.resume_auto) return;
  const auto latest = latest_checkpoint(out_ / "checkpoints");
  if (!latest) {
    log::info("--resume auto: no complete checkpoint in ", (out_ / "checkpoints").string(), "; starting fresh");
    return;
  }
  const auto loaded = model::CausalLM::load(latest->dir / "model", at::kFloat);
  {
    c10::NoGradGuard no_grad;
    const auto src = loaded.named_parameters();
    auto dst = model_->named_parameters();
    if (src.size() != dst.size()) throw std::runtime_error(latest->dir.string() + ": parameter count differs");
    for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  torch::serialize::InputArchive archive;
  archive.load_from((latest->dir / "optimizer.pt").string());
  optimizer_->load(archive);
  torch::serialize::InputArchive rng;
  if (archive.try_read("rng", rng)) {
    at::Tensor state;
    rng.read("cpu_generator", state);
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(state);
  }
  std::ifstream f(latest->dir / "state.json");
  const auto state = nlohmann::json::parse(f);
  step_ = state.at("step").get<int64_t>();
  sampler_->restore({state.at("data_epoch").get<int64_t>(), state.at("data_offset").get<int64_t>()});
  nonfinite_in_a_row_ = state.value("nonfinite_in_a_row", 0);
  nonfinite_total_ = state.value("nonfinite_total", 0);
  // Steps after the checkpoint were lost with the process; their metric lines go, so the file reads as one run.
  const auto path = out_ / "metrics.jsonl";
  if (fs::exists(path)) {
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step_) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a torn last line from the kill
      }
    }
    in.close();
    std::ofstream outf(path, std::ios::trunc);
    outf << kept;
  }
  log::info("resumed from ", latest->dir.string(), " at step ", step_);
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

void Trainer::optimizer_step(std::map<std::string, double>& metrics, double loss_value) {
  auto params = model_->parameters();
  const double max_norm = cfg_.train.grad_clip > 0 ? cfg_.train.grad_clip : std::numeric_limits<double>::infinity();
  const double norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  metrics["actor/grad_norm"] = norm;
  if (!std::isfinite(norm) || !std::isfinite(loss_value)) {
    ++nonfinite_in_a_row_;
    ++nonfinite_total_;
    metrics["train/skipped_nonfinite"] = 1;
    log::warn("step ", step_ + 1, ": non-finite loss or gradient (loss ", loss_value, ", grad norm ", norm,
              "); update skipped (", nonfinite_in_a_row_, " in a row)");
    optimizer_->zero_grad();
    if (nonfinite_in_a_row_ >= cfg_.train.max_nonfinite_steps)
      throw std::runtime_error("stopping: " + std::to_string(nonfinite_in_a_row_) +
                               " updates in a row had a non-finite loss or gradient (train.max_nonfinite_steps=" +
                               std::to_string(cfg_.train.max_nonfinite_steps) + ")");
    return;
  }
  nonfinite_in_a_row_ = 0;
  optimizer_->step();
  optimizer_->zero_grad();
}

std::vector<Sequence> Trainer::rollout_groups(const std::vector<int64_t>& indices,
                                              std::map<std::string, double>& metrics, double& t_generate,
                                              double& t_score) {
  auto t0 = Clock::now();
  std::vector<rollout::Prompt> prompts;
  for (int64_t i : indices) prompts.push_back({prepared_[i].prompt_ids, -1});
  model_->pack_for_inference(cfg_.rollout.max_batch);
  const rollout::Generator generator(*model_, cfg_.rollout.max_batch, cfg_.rollout.kv_budget_mb << 20, tok_.get());
  // Each step (and each extra round of dynamic sampling) draws from its own seed, so a resumed run repeats it.
  const uint64_t seed = mix(mix(static_cast<uint64_t>(cfg_.rollout.seed), static_cast<uint64_t>(step_)),
                            static_cast<uint64_t>(metrics["rollout/gen_batches"]));
  std::vector<rollout::Sample> samples;
  {
    AutocastScope autocast(bf16_);
    samples = generator.generate(prompts, sampling(seed));
  }
  t_generate += seconds_since(t0);

  t0 = Clock::now();
  std::vector<reward::Group> groups(indices.size());
  std::vector<Sequence> seqs;
  for (size_t g = 0; g < indices.size(); ++g) {
    const auto& prob = *prepared_[indices[g]].problem;
    groups[g].prompt = prob.prompt;
    groups[g].ground_truth = prob.answer;
    groups[g].metadata = prob.row;
    groups[g].max_new_tokens = cfg_.rollout.max_new_tokens;
  }
  for (const auto& s : samples) {
    reward::Response r;
    r.text = tok_->decode(s.tokens, /*skip_special=*/true);
    r.ids = s.tokens;
    r.truncated = s.finish == rollout::FinishReason::kLength;
    groups[s.prompt_index].responses.push_back(std::move(r));
    Sequence q;
    q.group = s.prompt_index;
    q.prompt = prompts[s.prompt_index].ids;
    q.response = s.tokens;
    q.rollout_logprobs = s.logprobs;
    q.truncated = s.finish == rollout::FinishReason::kLength;
    seqs.push_back(std::move(q));
  }
  const auto scores = rewards_->score(groups);
  for (const auto& [k, v] : scores.metrics) metrics[k] += v;  // averaged over rounds by the caller
  std::vector<size_t> seen(groups.size(), 0);
  for (auto& q : seqs) {
    const size_t j = seen[q.group]++;
    q.score = scores.rewards[q.group][j];
    q.correct = !scores.correct.empty() && scores.correct[q.group][j];
  }
  t_score += seconds_since(t0);
  metrics["rollout/gen_batches"] += 1;
  return seqs;
}

std::map<std::string, double> Trainer::grpo_step() {
  const auto& a = cfg_.algo;
  const auto& t = cfg_.train;
  const auto step_start = Clock::now();
  std::map<std::string, double> m;
  double t_generate = 0, t_score = 0;

  // 1-3. Sample prompts, generate G rollouts each, score them. With dynamic sampling, groups whose rewards are
  // all equal are dropped and more prompts are drawn until the step is full or max_gen_batches is reached.
  std::vector<Sequence> seqs;
  int64_t groups_kept = 0, groups_seen = 0, zero_std_groups = 0;
  double all_reward_sum = 0, all_correct = 0, all_count = 0;
  while (groups_kept < t.prompts_per_step) {
    const int64_t want = a.dynamic_sampling ? t.prompts_per_step - groups_kept : t.prompts_per_step;
    auto round = rollout_groups(sampler_->next(want), m, t_generate, t_score);
    const int64_t n_groups = want;
    std::vector<double> lo(n_groups, 1e300), hi(n_groups, -1e300);
    for (const auto& q : round) {
      lo[q.group] = std::min(lo[q.group], q.score), hi[q.group] = std::max(hi[q.group], q.score);
      all_reward_sum += q.score, all_correct += q.correct, all_count += 1;
    }
    groups_seen += n_groups;
    std::vector<int64_t> renumber(n_groups, -1);
    for (int64_t g = 0; g < n_groups; ++g) {
      const bool zero_std = hi[g] <= lo[g];
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
  m["rollout/zero_std_group_frac"] = groups_seen ? static_cast<double>(zero_std_groups) / groups_seen : 0.0;
  m["reward/all_mean"] = all_count ? all_reward_sum / all_count : 0.0;
  m["accuracy"] = all_count ? all_correct / all_count : 0.0;
  if (seqs.empty()) {
    log::warn("step ", step_ + 1, ": dynamic sampling kept no group within algo.max_gen_batches; no update");
    m["train/empty_step"] = 1;
    m["time/generate"] = t_generate, m["time/score"] = t_score, m["time/step"] = seconds_since(step_start);
    return m;
  }

  const int64_t N = static_cast<int64_t>(seqs.size());
  std::vector<int64_t> all(N);
  std::iota(all.begin(), all.end(), 0);
  const auto micro_batches = chunks(all, t.micro_batch_size);
  const double temperature = cfg_.rollout.temperature > 0 ? cfg_.rollout.temperature : 1.0;
  const bool single_update = t.ppo_epochs == 1 && t.mini_batch_size >= N;

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
    for (const auto& members : micro_batches) {
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
    for (const auto& members : micro_batches) {
      const auto features = response_logprobs_features(*model_, make_micro(seqs, members), temperature, bf16_).second;
      for (size_t r = 0; r < members.size(); ++r) seqs[members[r]].features = features[static_cast<int64_t>(r)];
    }
  }
  if (reference_) {
    c10::NoGradGuard no_grad;
    for (const auto& members : micro_batches) {
      const auto mb = make_micro(seqs, members);
      store_rows(seqs, members, response_logprobs(*reference_, mb, temperature, bf16_).logp, &Sequence::ref_logp);
    }
  }
  const double t_old = seconds_since(t0);

  // G²RL: the verdicts as ±1, scaled by each response's novelty among its group's features.
  if (g2rl) {
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
    m["reward/kl_in_reward"] = kl_sum / N;
  }

  // 5. Group advantages.
  {
    std::vector<float> scores(N);
    std::vector<int64_t> groups(N);
    for (int64_t i = 0; i < N; ++i) scores[i] = static_cast<float>(seqs[i].score), groups[i] = seqs[i].group;
    algo::AdvantageOptions o;
    o.norm_by_std = a.norm_adv_by_std;
    o.unbiased_std = a.std_mode == "unbiased";
    o.epsilon = a.adv_epsilon;
    o.epsilon_inside_sqrt = a.epsilon_inside_sqrt;
    const auto adv = algo::advantage_estimator(a.adv_estimator)(torch::tensor(scores), torch::tensor(groups), o);
    for (int64_t i = 0; i < N; ++i) seqs[i].advantage = adv[i].item<float>();
    double sum = 0, sq = 0;
    for (float s : scores) sum += s, sq += static_cast<double>(s) * s;
    const double mean = sum / N;
    m["reward/mean"] = mean;
    m["reward/std"] = N > 1 ? std::sqrt(std::max(0.0, (sq - N * mean * mean) / (N - 1))) : 0.0;
  }

  // 6. PPO-clip updates: mini-batches of sequences, each accumulated over micro-batches, normalised by the
  // mini-batch's global token and sequence counts so the split never changes the gradient.
  t0 = Clock::now();
  algo::PolicyLossOptions plo{a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c};
  const auto& policy_loss = algo::policy_loss("vanilla");
  Accumulator acc;
  double resp_tokens = 0, prompt_tokens = 0, max_len = 0, truncated = 0;
  for (const auto& q : seqs) {
    resp_tokens += static_cast<double>(q.response.size());
    prompt_tokens += static_cast<double>(q.prompt.size());
    max_len = std::max(max_len, static_cast<double>(q.response.size()));
    truncated += q.truncated;
  }
  int64_t updates = 0;
  for (int64_t epoch = 0; epoch < t.ppo_epochs; ++epoch) {
    for (const auto& mini : chunks(all, t.mini_batch_size)) {
      algo::AggregationScale scale;
      scale.global_tokens = 0;
      scale.global_sequences = 0;
      for (int64_t i : mini) {
        scale.global_tokens += static_cast<double>(seqs[i].response.size());
        scale.global_sequences += seqs[i].response.empty() ? 0 : 1;
      }
      scale.loss_scale_factor =
          a.loss_scale_factor > 0 ? a.loss_scale_factor : static_cast<double>(cfg_.rollout.max_new_tokens);
      double loss_value = 0;
      for (const auto& members : chunks(mini, t.micro_batch_size)) {
        const auto mb = make_micro(seqs, members);
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
      acc.add("actor/pg_loss", loss_value, 1);
      optimizer_step(m, loss_value);
      ++updates;
    }
  }
  acc.write(m);
  const double t_update = seconds_since(t0);
  m["actor/updates"] = static_cast<double>(updates);
  m["response_length/mean"] = resp_tokens / N;
  m["response_length/max"] = max_len;
  m["response_length/truncated_frac"] = truncated / N;
  m["time/generate"] = t_generate;
  m["time/score"] = t_score;
  m["time/old_logprob"] = t_old;
  m["time/update"] = t_update;
  m["time/step"] = seconds_since(step_start);
  m["throughput/tokens_per_s"] = (resp_tokens + prompt_tokens) / m["time/step"];
  m["throughput/generated_tokens_per_s"] = t_generate > 0 ? resp_tokens / t_generate : 0.0;
  return m;
}

std::map<std::string, double> Trainer::sft_step() {
  const auto step_start = Clock::now();
  std::map<std::string, double> m;
  const auto indices = sampler_->next(cfg_.train.prompts_per_step);
  std::vector<Sequence> seqs;
  for (int64_t i : indices) {
    Sequence q;
    q.prompt = prepared_[i].prompt_ids;
    q.response = prepared_[i].target_ids;
    seqs.push_back(std::move(q));
  }
  std::vector<int64_t> all(seqs.size());
  std::iota(all.begin(), all.end(), 0);
  double tokens_total = 0;
  for (const auto& q : seqs) tokens_total += static_cast<double>(q.response.size());
  algo::AggregationScale scale;
  scale.global_tokens = tokens_total;
  double loss_value = 0;
  for (const auto& members : chunks(all, cfg_.train.micro_batch_size)) {
    const auto mb = make_micro(seqs, members);
    const auto out = response_logprobs(*model_, mb, 1.0, bf16_);
    const auto loss = algo::aggregate_loss(-out.logp, mb.mask, "token-mean", scale);
    loss.backward();
    loss_value += loss.item<double>();
  }
  m["sft/loss"] = loss_value;
  optimizer_step(m, loss_value);
  m["time/step"] = seconds_since(step_start);
  m["throughput/tokens_per_s"] = tokens_total / m["time/step"];
  return m;
}

void Trainer::evaluate_into(std::map<std::string, double>& metrics, const std::string& prefix) {
  if (eval_set_.problems.empty()) return;
  model_->pack_for_inference(cfg_.rollout.max_batch);
  const rollout::Generator generator(*model_, cfg_.rollout.max_batch, cfg_.rollout.kv_budget_mb << 20, tok_.get());
  auto params = sampling(mix(static_cast<uint64_t>(cfg_.rollout.seed), 0xE7A1ull));  // the same draws every time
  params.n = cfg_.train.eval_n;
  AutocastScope autocast(bf16_);
  const auto s = evaluate(generator, *tok_, *format_, eval_set_.problems, params, cfg_.reward.math,
                          cfg_.data.max_prompt_tokens, {}, static_cast<uint64_t>(cfg_.train.seed));
  metrics[prefix + "accuracy"] = s.pass_at_1;
  metrics[prefix + "response_length"] = s.mean_response_tokens;
  metrics[prefix + "seconds"] = s.seconds;
}

RunResult Trainer::run() {
  setup();
  resume();
  metrics_ = std::make_unique<io::MetricsWriter>(out_ / "metrics.jsonl");
  const auto& t = cfg_.train;
  log::info("training ", cfg_.model.path, " (", t.mode, ") for ", t.total_steps, " steps into ", out_.string(), "; ",
            prepared_.size(), " problems");
  RunResult result;
  if (step_ == 0 && t.eval_every > 0) {
    std::map<std::string, double> m;
    evaluate_into(m, "eval/");
    metrics_->write(0, m);
    result.last_metrics = m;
    log::info("step 0: held-out accuracy ", m["eval/accuracy"]);
  }
  io::Progress bar("train", t.total_steps, io::Progress::resolve_mode(cfg_.log.progress, 2),
                   cfg_.log.progress_interval_s, std::cerr);
  for (int64_t i = 0; i < step_; ++i) bar.advance();
  while (step_ < t.total_steps) {
    const double lr = learning_rate_at(t, step_);
    for (auto& group : optimizer_->param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    auto m = t.mode == "sft" ? sft_step() : grpo_step();
    ++step_;
    m["actor/lr"] = lr;
    m["data/epoch"] = static_cast<double>(sampler_->cursor().epoch);
    m["data/skipped_long_prompts"] = static_cast<double>(skipped_long_prompts_);
    m["data/skipped_malformed"] = static_cast<double>(train_set_.skipped);
    m["train/nonfinite_total"] = static_cast<double>(nonfinite_total_);
    m["train/checkpoint_failures"] = static_cast<double>(checkpoint_failures_);
    if (t.eval_every > 0 && (step_ % t.eval_every == 0 || step_ == t.total_steps)) evaluate_into(m, "eval/");
    metrics_->write(step_, m);
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
  export_final();
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
