#!/usr/bin/env bash
# GRPO against G2RL on G2RL's toy task (demo.task=digit-set: the set of a number's digits, correct in any order), 3
# seeds, on this machine. Each seed gets its own SFT warm start, then both runs start from it. After training, each
# policy answers 100 held-out problems 8 times and `introspect analyze g2rl-geometry` measures the pairwise cos(Phi)
# of each problem's responses (the paper's section 7). Writes runs/g2rl-repro/table.md, heldout_accuracy.png and a
# cosine histogram per run.
# Usage: scripts/reproduce_g2rl.sh [extra overrides for both runs, e.g. g2rl.lambda=1.0 train.total_steps=120]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
bin="${INTROSPECT_BIN:-build/bin/introspect}"
[[ -x "$bin" ]] || scripts/build.sh
out="${G2RL_REPRO_OUT:-runs/g2rl-repro}"
mkdir -p "$out"
py="${INTROSPECT_VENV:-$HOME/.cache/introspect/venv}/bin/python"
for seed in 1 2 3; do
  d="$out/seed$seed"
  mkdir -p "$d"
  # The warm start: the demo's SFT phase on the digit-set task (its GRPO phase is cut to one step and not used).
  "$bin" train --out "$d/demo" demo.task=digit-set demo.sft_steps=1200 demo.grpo_steps=1 train.seed=$seed \
    log.progress=off > "$d.demo.log" 2>&1
  for variant in grpo g2rl; do
    "$bin" train --config "configs/g2rl/toy-$variant.yaml" --out "$d/$variant" train.seed=$seed \
      model.path="$d/demo/sft/export" data.train_path="$d/demo/data/train.jsonl" \
      data.eval_path="$d/demo/data/heldout.jsonl" log.progress=off "$@" > "$d.$variant.log" 2>&1
    "$bin" analyze g2rl-geometry --config "configs/g2rl/toy-$variant.yaml" --model "$d/$variant/export" \
      --data "$d/demo/data/heldout.jsonl" --k 8 --problems 100 --out "$d/$variant/geometry" log.progress=off "$@" > /dev/null
    "$py" scripts/plot_g2rl_geometry.py "$d/$variant/geometry" > /dev/null
    echo "seed $seed $variant done"
  done
done
"$py" scripts/g2rl_report.py "$out"
