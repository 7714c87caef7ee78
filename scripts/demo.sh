#!/usr/bin/env bash
# Sets up and builds (both only do what is missing), then runs the built-in demo: `introspect train` with no
# config trains a tiny Qwen3-architecture model on digit reversal ("reverse 4713" -> \boxed{3174}), an SFT warm
# start on noisy demonstrations then GRPO, and prints the held-out accuracy before and after GRPO. Extra
# arguments are overrides, e.g. `scripts/demo.sh demo.grpo_steps=30` or `scripts/demo.sh --resume auto`.
# Finally it draws the GRPO curves into runs/demo/grpo/plots/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
source "$root/scripts/env.sh"
build_dir="${BUILD_DIR:-build}"
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
"$build_dir/bin/introspect" train --out runs/demo "$@"
python="$INTROSPECT_VENV/bin/python"
if [ -x "$python" ]; then
  "$python" scripts/plot_metrics.py runs/demo/grpo
else
  echo "no plots: $python is missing (scripts/setup.sh creates it)"
fi
