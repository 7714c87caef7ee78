#include "introspect/dist/optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "introspect/dist/communicator.h"
#include "introspect/io/safetensors.h"

namespace introspect::dist {
namespace fs = std::filesystem;

struct DistributedAdamW::Impl {
  std::vector<at::Tensor> params;
  std::vector<int64_t> offsets;  // of each parameter in the flat vector
  Communicator& comm;
  bool sharded;
  int64_t total = 0;   // parameters
  int64_t shard = 0;   // elements per rank (ZeRO-1), the last shard padded with zeros
  int64_t begin = 0;   // this rank's range [begin, begin + state_len) of the flat vector
  int64_t state_len = 0;
  int64_t bucket = 0;  // elements per collective
  at::Tensor flat;     // [world * shard] gradients, then gathered parameters
  at::Tensor master;   // [state_len] the parameters this rank updates (its AdamW tensor)
  at::Tensor staging;  // [world * bucket] bucket gather / scatter buffer (ZeRO-1)
  std::unique_ptr<torch::optim::AdamW> adam;

  Impl(std::vector<at::Tensor> ps, const AdamWOptions& o, Communicator& c, int64_t zero_stage, double bucket_mb)
      : params(std::move(ps)), comm(c), sharded(zero_stage >= 1) {
    for (const auto& p : params) offsets.push_back(total), total += p.numel();
    const int64_t w = comm.world_size();
    shard = sharded ? (total + w - 1) / w : total;
    begin = sharded ? comm.rank() * shard : 0;
    state_len = shard;
    bucket = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * (1 << 20) / 4));
    // The flat buffers live on the parameters' device only when no collective touches them (one rank, stage 0):
    // MPI and the single-rank engine move host memory. Otherwise they stay on the host, and the copies between
    // parameters and buffers cross devices.
    const bool on_device = w == 1 && !sharded && !params.empty();
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(on_device ? params[0].device() : at::kCPU);
    flat = torch::zeros({sharded ? w * shard : total}, f32);
    if (sharded) staging = torch::zeros({w * std::min(bucket, shard)}, f32);
    master = torch::zeros({state_len}, f32);
    read_params();
    torch::optim::AdamWOptions opts(1e-3);
    opts.betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay);
    adam = std::make_unique<torch::optim::AdamW>(std::vector<at::Tensor>{master}, opts);
  }

  // master <- this rank's range of the model's parameters (the padding past `total` stays zero).
  void read_params() {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t lo = std::max(offsets[i], begin);
      const int64_t hi = std::min(offsets[i] + params[i].numel(), begin + state_len);
      if (lo < hi) master.narrow(0, lo - begin, hi - lo).copy_(params[i].detach().reshape(-1).narrow(0, lo - offsets[i], hi - lo));
    }
  }

  void gradients_to_flat() {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      auto dst = flat.narrow(0, offsets[i], params[i].numel());
      const auto& g = params[i].grad();
      if (g.defined()) dst.copy_(g.reshape(-1));
      else dst.zero_();
    }
    if (flat.numel() > total) flat.narrow(0, total, flat.numel() - total).zero_();
  }

  // This rank's summed gradient, [state_len].
  at::Tensor reduce_gradients() {
    auto* data = flat.data_ptr<float>();
    if (!sharded) {
      for (int64_t o = 0; o < total; o += bucket)
        comm.all_reduce(data + o, static_cast<size_t>(std::min(bucket, total - o)), DType::kFloat32, ReduceOp::kSum);
      return flat;
    }
    // Bucket b of every rank's shard travels together: staging holds world blocks of len elements.
    const int64_t w = comm.world_size();
    auto mine = torch::empty({shard}, flat.options());
    for (int64_t o = 0; o < shard; o += bucket) {
      const int64_t len = std::min(bucket, shard - o);
      for (int64_t r = 0; r < w; ++r) staging.narrow(0, r * len, len).copy_(flat.narrow(0, r * shard + o, len));
      comm.reduce_scatter(staging.data_ptr<float>(), mine.data_ptr<float>() + o, static_cast<size_t>(len),
                          DType::kFloat32, ReduceOp::kSum);
    }
    return mine;
  }

  // The model's parameters <- the updated master (gathered from every rank under ZeRO-1).
  void write_params() {
    c10::NoGradGuard no_grad;
    at::Tensor full = master;
    if (sharded) {
      const int64_t w = comm.world_size();
      for (int64_t o = 0; o < shard; o += bucket) {
        const int64_t len = std::min(bucket, shard - o);
        comm.all_gather(master.data_ptr<float>() + o, staging.data_ptr<float>(), static_cast<size_t>(len),
                        DType::kFloat32);
        for (int64_t r = 0; r < w; ++r) flat.narrow(0, r * shard + o, len).copy_(staging.narrow(0, r * len, len));
      }
      full = flat;
    }
    for (size_t i = 0; i < params.size(); ++i)
      params[i].detach().view(-1).copy_(full.narrow(0, offsets[i], params[i].numel()));
  }
};

DistributedAdamW::DistributedAdamW(std::vector<at::Tensor> params, const AdamWOptions& options, Communicator& comm,
                                   int64_t zero_stage, double bucket_mb)
    : impl_(std::make_unique<Impl>(std::move(params), options, comm, zero_stage, bucket_mb)) {}
DistributedAdamW::~DistributedAdamW() = default;

int64_t DistributedAdamW::numel() const { return impl_->total; }
int64_t DistributedAdamW::state_numel() const { return impl_->state_len; }

void DistributedAdamW::zero_grad() {
  for (auto& p : impl_->params) p.mutable_grad().reset();
}

DistributedAdamW::StepResult DistributedAdamW::step(double max_norm, double lr) {
  auto& s = *impl_;
  s.gradients_to_flat();
  zero_grad();
  auto grad = s.reduce_gradients().narrow(0, 0, s.state_len);
  double sum_sq = grad.square().sum(at::kDouble).item<double>();
  if (s.sharded) sum_sq = all_reduce_sum(s.comm, sum_sq);
  StepResult result;
  result.grad_norm = std::sqrt(sum_sq);
  if (!std::isfinite(result.grad_norm)) return result;
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  if (max_norm > 0) {
    const double coef = max_norm / (result.grad_norm + 1e-6);
    if (coef < 1.0) grad.mul_(coef);
  }
  s.master.mutable_grad() = grad.clone();
  for (auto& group : s.adam->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  s.adam->step();
  s.master.mutable_grad().reset();
  s.write_params();
  result.applied = true;
  return result;
}

namespace {
constexpr const char* kLayoutFormat = "introspect-adamw-flat-v1";
}

void DistributedAdamW::save(const fs::path& dir) const {
  const auto& s = *impl_;
  const int rank = s.comm.rank();
  if (!s.sharded && rank != 0) return;  // every rank holds the same state
  fs::create_directories(dir);
  const auto& states = s.adam->state();
  const auto it = states.find(s.master.unsafeGetTensorImpl());
  int64_t steps = 0;
  at::Tensor m = torch::zeros({s.state_len}), v = torch::zeros({s.state_len});
  if (it != states.end()) {
    const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    steps = st.step(), m = st.exp_avg().cpu().contiguous(), v = st.exp_avg_sq().cpu().contiguous();
  }
  // The padding past the last parameter is not saved.
  const int64_t len = std::max<int64_t>(0, std::min(s.state_len, s.total - s.begin));
  const uint64_t bytes = static_cast<uint64_t>(len) * 4;
  const int shard_id = s.sharded ? rank : 0;
  io::write_safetensors(dir / ("shard_" + std::to_string(shard_id) + ".safetensors"),
                        {{"exp_avg", io::DType::kF32, {len}, m.data_ptr<float>(), bytes},
                         {"exp_avg_sq", io::DType::kF32, {len}, v.data_ptr<float>(), bytes}},
                        {{"format", "pt"}, {"begin", std::to_string(s.begin)}});
  if (rank != 0) return;
  nlohmann::json layout{{"format", kLayoutFormat}, {"numel", s.total}, {"step", steps}, {"shards", nlohmann::json::array()}};
  const int files = s.sharded ? s.comm.world_size() : 1;
  for (int r = 0; r < files; ++r) {
    const int64_t b = s.sharded ? r * s.shard : 0;
    layout["shards"].push_back({{"file", "shard_" + std::to_string(r) + ".safetensors"},
                                {"begin", b},
                                // a shard wholly in the padding (tiny models, many ranks) is empty, not negative
                                {"end", std::max(b, std::min(s.total, b + s.shard))}});
  }
  nlohmann::json shapes = nlohmann::json::array();
  for (const auto& p : s.params) shapes.push_back(p.sizes().vec());
  layout["param_shapes"] = shapes;
  std::ofstream f(dir / "layout.json");
  f << layout.dump(1) << "\n";
  if (!f.flush()) throw std::runtime_error("cannot write " + (dir / "layout.json").string());
}

void DistributedAdamW::load(const fs::path& dir) {
  auto& s = *impl_;
  const auto layout_path = dir / "layout.json";
  std::ifstream f(layout_path);
  if (!f) throw std::runtime_error(layout_path.string() + ": missing (the optimizer state of the checkpoint)");
  nlohmann::json layout;
  try {
    layout = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(layout_path.string() + ": " + e.what());
  }
  if (layout.value("format", "") != kLayoutFormat)
    throw std::runtime_error(layout_path.string() + ": format is not " + kLayoutFormat);
  if (layout.at("numel").get<int64_t>() != s.total)
    throw std::runtime_error(layout_path.string() + ": holds state for " + std::to_string(layout.at("numel").get<int64_t>()) +
                             " parameters, the model has " + std::to_string(s.total));
  at::Tensor m = torch::zeros({s.state_len}), v = torch::zeros({s.state_len});
  const int64_t lo = s.begin, hi = std::max(lo, std::min(s.total, s.begin + s.state_len));
  int64_t covered = 0;
  for (const auto& shard : layout.at("shards")) {
    const int64_t b = shard.at("begin").get<int64_t>(), e = shard.at("end").get<int64_t>();
    const int64_t from = std::max(lo, b), to = std::min(hi, e);
    if (from >= to) continue;
    const auto path = dir / shard.at("file").get<std::string>();
    const io::SafetensorsFile file(path);
    for (const auto& [name, dst] : {std::pair{"exp_avg", m}, std::pair{"exp_avg_sq", v}}) {
      const auto* t = file.header().find(name);
      if (!t || t->dtype != io::DType::kF32 || t->numel() != static_cast<uint64_t>(e - b))
        throw std::runtime_error(path.string() + ": tensor " + name + " is missing or is not F32 [" +
                                 std::to_string(e - b) + "]");
      const auto* src = reinterpret_cast<const float*>(file.bytes(*t)) + (from - b);
      std::memcpy(dst.data_ptr<float>() + (from - lo), src, static_cast<size_t>(to - from) * 4);
    }
    covered += to - from;
  }
  if (covered != hi - lo)
    throw std::runtime_error(dir.string() + ": the shards cover " + std::to_string(covered) + " of the " +
                             std::to_string(hi - lo) + " elements of rank " + std::to_string(s.comm.rank()) + "'s range");
  s.read_params();
  auto state = std::make_unique<torch::optim::AdamWParamState>();
  state->step(layout.at("step").get<int64_t>());
  state->exp_avg(m.to(s.master.device()));
  state->exp_avg_sq(v.to(s.master.device()));
  s.adam->state()[s.master.unsafeGetTensorImpl()] = std::move(state);
}

}  // namespace introspect::dist
