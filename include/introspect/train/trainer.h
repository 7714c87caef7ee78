// The training loop: GRPO (generate, score, group advantages, PPO-clip updates over mini- and micro-batches) or
// SFT (cross-entropy on response tokens), with metrics, atomic checkpoints, exact resume and the final export.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "introspect/config/schema.h"

namespace introspect::dist {
class Communicator;
}

namespace introspect::train {

struct RunOptions {
  bool resume_auto = false;  // continue from the latest complete checkpoint in the run folder, if any
  // The job's ranks (mpirun). nullptr: dist::from_environment, a single rank when not under a launcher.
  // Every rank calls run() with the same config; rank 0 alone writes logs, metrics, checkpoints and the export.
  dist::Communicator* comm = nullptr;
};

struct RunResult {
  int64_t steps_done = 0;
  std::filesystem::path export_dir;
  std::map<std::string, double> last_metrics;  // the last step's metrics (eval/* included when evaluated)
};

// Runs cfg.train.mode in cfg.run.out_dir. With several ranks, each generates and trains on its share of every
// step's prompts (whole groups) and the result does not depend on the world size. Throws std::runtime_error with a clear message on bad input
// (empty dataset, unreadable model, too many non-finite steps, ...).
RunResult run(const config::Config& cfg, const RunOptions& options = {});

// The learning rate of a training step: linear warmup over warmup_steps, then constant or cosine to zero.
double learning_rate_at(const config::TrainConfig& train, int64_t step);

}  // namespace introspect::train
