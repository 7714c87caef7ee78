// AdamW for a data-parallel model, with ZeRO-1 as a switch.
//
// Each rank computes gradients on its share of the batch, normalised by the batch's global token or sequence
// counts, so their sum over ranks is the batch's gradient (no dp factor is needed: verl multiplies by dp_size
// only to undo DDP's averaging, and here the ranks' gradients are summed). step() then:
//  - zero_stage 0: all-reduces the flat gradient in buckets; every rank keeps the whole AdamW state and
//    updates every parameter;
//  - zero_stage 1: cuts the flat parameter vector into world_size contiguous shards, reduce-scatters the
//    gradient in buckets, updates its own shard with its 1/world of the state, and all-gathers the parameters.
// The global gradient norm (for clipping and the non-finite check) is the same number on every rank.
//
// The state is saved as layout.json plus one safetensors file per shard (exp_avg, exp_avg_sq over a range of
// the flat vector), and loads into any world size and either stage: each rank reads the slices of its range.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <vector>

namespace introspect::dist {

class Communicator;

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

class DistributedAdamW {
 public:
  // `params` are the model's parameters in a fixed order (the same on every rank).
  DistributedAdamW(std::vector<at::Tensor> params, const AdamWOptions& options, Communicator& comm,
                   int64_t zero_stage, double bucket_mb);
  ~DistributedAdamW();

  struct StepResult {
    double grad_norm = 0;  // of the summed gradient, before clipping
    bool applied = false;  // false when the norm is not finite (the gradients are dropped)
  };
  // Collective. Sums the gradients over the ranks, clips them to max_norm (<= 0: no clipping) as
  // torch.nn.utils.clip_grad_norm_ does, and takes one AdamW step at `lr`. The gradients are zeroed either way.
  StepResult step(double max_norm, double lr);
  // Drops the parameters' gradients (a skipped update).
  void zero_grad();

  // Writes this rank's shard into dir (rank 0 also writes layout.json); with zero_stage 0 only rank 0 writes.
  void save(const std::filesystem::path& dir) const;
  // Reads the state saved by any world size and stage, re-cut to this rank's range, and re-reads the
  // parameters (load the weights first). Throws naming the file when it does not fit these parameters.
  void load(const std::filesystem::path& dir);

  int64_t numel() const;        // parameters in the flat vector
  int64_t state_numel() const;  // elements of the flat vector whose AdamW state this rank holds

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace introspect::dist
