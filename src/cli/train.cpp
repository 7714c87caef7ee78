// introspect train: a config's run (GRPO or SFT), or the built-in demo when no config is given.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "introspect/config/config.h"
#include "introspect/dist/communicator.h"
#include "introspect/train/demo.h"
#include "introspect/train/trainer.h"

namespace introspect::cli {

int train(const TrainOptions& o) {
  std::unique_ptr<dist::Communicator> comm;
  try {
    if (!o.resume.empty() && o.resume != "auto")
      throw std::invalid_argument("--resume takes 'auto' (the latest complete checkpoint in the run folder)");
    const bool resume = o.resume == "auto";
    if (o.config.empty()) {
      const auto r = train::run_demo(o.overrides, o.out.empty() ? "runs/demo" : o.out, resume);
      std::printf("held-out accuracy: before %.3f after %.3f\n", r.accuracy_before, r.accuracy_after);
      // Plots need matplotlib, which lives in the project venv (scripts/demo.sh runs this for you).
      std::printf("checkpoint: %s\nexport: %s\nplots: ~/.cache/introspect/venv/bin/python scripts/plot_metrics.py %s\n",
                  r.checkpoint.c_str(), r.export_dir.c_str(), (r.run_dir / "grpo").c_str());
      return 0;
    }
    auto cfg = config::load(o.config, o.overrides);
    if (!o.out.empty()) cfg.run.out_dir = o.out;
    comm = dist::from_environment(cfg.dist.timeout_s);
    const auto r = train::run(cfg, {resume, comm.get()});
    if (comm->rank() == 0)
      std::printf("trained %lld steps; export: %s\n", static_cast<long long>(r.steps_done), r.export_dir.c_str());
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
  } catch (const std::exception& e) {
    const std::string who = comm && comm->world_size() > 1 ? "rank " + std::to_string(comm->rank()) + ": " : "";
    std::cerr << "introspect train: " << who << e.what() << "\n";
    // The other ranks would wait in their next collective until dist.timeout_s: end them now.
    if (comm && comm->world_size() > 1) {
      std::cerr.flush();
      comm->abort(1);
    }
  }
  return 1;
}

}  // namespace introspect::cli
