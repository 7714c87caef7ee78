#!/usr/bin/env bash
# GRPO against G2RL on the toy task, 3 seeds, on this machine: each seed gets its own SFT warm start (the demo's),
# then both runs start from it. Writes runs/g2rl-repro/table.md and plots of held-out accuracy and reward.
# Usage: scripts/reproduce_g2rl.sh [extra overrides for both runs, e.g. g2rl.lambda=1.0]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
bin="${INTROSPECT_BIN:-build/bin/introspect}"
[[ -x "$bin" ]] || scripts/build.sh
out=runs/g2rl-repro
mkdir -p "$out"
for seed in 1 2 3; do
  d="$out/seed$seed"
  mkdir -p "$d"
  # The warm start: the demo's SFT phase (its GRPO phase is cut to one step and not used).
  "$bin" train --out "$d/demo" train.seed=$seed demo.grpo_steps=1 log.progress=off > "$d.demo.log" 2>&1
  for variant in grpo g2rl; do
    "$bin" train --config "configs/g2rl/toy-$variant.yaml" --out "$d/$variant" train.seed=$seed \
      model.path="$d/demo/sft/export" data.train_path="$d/demo/data/train.jsonl" \
      data.eval_path="$d/demo/data/heldout.jsonl" log.progress=off "$@" > "$d.$variant.log" 2>&1
    echo "seed $seed $variant done"
  done
done
py="${INTROSPECT_VENV:-$HOME/.cache/introspect/venv}/bin/python"
"$py" - "$out" <<'PY'
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
rows, curves = [], {}
for seed in (1, 2, 3):
    for variant in ("grpo", "g2rl"):
        m = [json.loads(l) for l in open(os.path.join(out, f"seed{seed}", variant, "metrics.jsonl"))]
        ev = [(x["step"], x["eval/accuracy"]) for x in m if x.get("eval/accuracy") is not None]
        rows.append((seed, variant, ev[0][1], ev[-1][1]))
        curves.setdefault(variant, []).append(ev)
lines = ["| seed | run | held-out acc. before | after |", "|---|---|---|---|"]
lines += [f"| {s} | {v} | {b:.3f} | {a:.3f} |" for s, v, b, a in rows]
for v in ("grpo", "g2rl"):
    after = [a for s, vv, b, a in rows if vv == v]
    mean = sum(after) / len(after)
    sd = (sum((x - mean) ** 2 for x in after) / (len(after) - 1)) ** 0.5
    lines.append(f"| mean±sd | {v} | | {mean:.3f} ± {sd:.3f} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
fig, ax = plt.subplots(figsize=(6, 3.5))
for v, color in (("grpo", "tab:blue"), ("g2rl", "tab:red")):
    for i, ev in enumerate(curves[v]):
        ax.plot([p[0] for p in ev], [p[1] for p in ev], color=color, alpha=0.7, label=v if i == 0 else None)
ax.set_xlabel("step"); ax.set_ylabel("held-out accuracy"); ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout(); fig.savefig(os.path.join(out, "heldout_accuracy.png"), dpi=100)
print("wrote", os.path.join(out, "table.md"), "and heldout_accuracy.png")
PY
