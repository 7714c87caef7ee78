#!/usr/bin/env bash
# GRPO against MASA against MASA-efficient on the toy task (demo.task=masa), 3 seeds, on this machine. Each seed
# gets its own SFT warm start; the four runs start from it. The MASA policies' gate is then measured on the
# held-out problems (introspect analyze masa-gate), and MASA-efficient runs once more with the early cutoff off.
# Writes runs/masa-repro/table.md (runs/masa-repro-long/ for the long toy) and PNG plots.
# Usage: scripts/reproduce_masa.sh [extra overrides for all runs, e.g. train.total_steps=60]
# Environment: MASA_REPRO_OUT (the output folder), MASA_REPRO_SEEDS (default "1 2 3"), MASA_REPRO_VARIANTS (a subset
# of "grpo masa masa-efficient masa-efficient-nocutoff"), MASA_REPRO_DEMO (extra warm-start overrides),
# MASA_REPRO_SIDE_BY_SIDE=1 (GRPO and MASA-efficient, when both are asked for, run at the same time, one thread
# each, so that both wall times see the same host speed; this VM's speed drifts by about 15% over minutes) and
# MASA_REPRO_TOY: "short" (the default; about 16 min), "overthinking" (below; about 45 min) or "long", the toy whose
# solutions spell out their working (about 100 tokens) so that the meta path is a small share of rollout tokens, as
# in the paper (about 80 min). The long toy is the short one with these overrides, which the extra overrides above
# can change:
#   demo.masa_working=true for the warm start; rollout.max_new_tokens=192 masa.cutoff_min_tokens=60
#   train.total_steps=200 masa.efficient_start_step=100 train.eval_every=10 masa.cutoff_guard_max_over_cap=0.05 for
# the runs and the gate analysis (a shorter train.total_steps must stay above masa.efficient_start_step, or
# MASA-efficient is plain MASA; the guard, which the spec lacks, left 4 of 5 seeds' runs unchanged and kept the
# fifth's too-short length predictions from truncating 14% of its solutions). "overthinking" is the short toy whose
# warm start hesitates at length before a fifth of its answers (demo.masa_overthinking=0.2), as reasoning models
# overthink, with rollout.max_new_tokens=120 so that only MASA's early cutoff limits them (the spec's cutoff: no
# guard), and masa.efficient_start_step=10: hesitant answers are less often right, so GRPO alone shortens the mean
# solution from 12-18 tokens to 7-9 by step 40, and a cutoff from step 70 saves 5% of the tokens against 15%.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
bin="${INTROSPECT_BIN:-build/bin/introspect}"
[[ -x "$bin" ]] || scripts/build.sh
variants="${MASA_REPRO_VARIANTS:-grpo masa masa-efficient masa-efficient-nocutoff}"
case "${MASA_REPRO_TOY:-short}" in
  short) toy_demo=() toy_runs=() toy_out=runs/masa-repro ;;
  long)
    toy_demo=(demo.masa_working=true) toy_out=runs/masa-repro-long
    toy_runs=(rollout.max_new_tokens=192 masa.cutoff_min_tokens=60 train.total_steps=200 masa.efficient_start_step=100
              train.eval_every=10 masa.cutoff_guard_max_over_cap=0.05) ;;
  overthinking)
    toy_demo=(demo.masa_overthinking=0.2) toy_out=runs/masa-repro-overthinking
    toy_runs=(rollout.max_new_tokens=120 masa.efficient_start_step=10) ;;
  *) echo "MASA_REPRO_TOY must be short, long or overthinking, not '${MASA_REPRO_TOY}'" >&2; exit 2 ;;
esac
side_by_side="${MASA_REPRO_SIDE_BY_SIDE:-0}"
[[ "$side_by_side" == [01] ]] || { echo "MASA_REPRO_SIDE_BY_SIDE must be 0 or 1, not '$side_by_side'" >&2; exit 2; }
# The report reads every seed folder in the output, so the two toys never share one.
out="${MASA_REPRO_OUT:-$toy_out}"
mkdir -p "$out"
read -r -a demo_overrides <<< "${MASA_REPRO_DEMO:-}"
demo_overrides=("${toy_demo[@]}" "${demo_overrides[@]}")
overrides=("${toy_runs[@]}" "$@")
# One run of seed $seed from $d's warm start. The -nocutoff variant is the cutoff ablation: MASA-efficient with the
# early cutoff off, everything else the same.
train_variant() {  # variant [overrides before the user's]
  local variant=$1 ablation=()
  shift
  [[ "$variant" == *-nocutoff ]] && ablation=(masa.cutoff_scale=0)
  "$bin" train --config "configs/masa/toy-${variant%-nocutoff}.yaml" --out "$d/$variant" train.seed=$seed \
    model.path="$d/demo/sft/export" data.train_path="$d/demo/data/train.jsonl" \
    data.eval_path="$d/demo/data/heldout.jsonl" log.progress=off "$@" "${overrides[@]}" "${ablation[@]}" \
    > "$d.$variant.log" 2>&1
  echo "seed $seed $variant done"
}
for seed in ${MASA_REPRO_SEEDS:-1 2 3}; do
  d="$out/seed$seed"
  mkdir -p "$d"
  # The warm start: the demo's SFT phase on the MASA toy (its GRPO phase is cut to one step and not used).
  "$bin" train --out "$d/demo" demo.task=masa demo.sft_steps=1500 demo.grpo_steps=1 train.seed=$seed \
    log.progress=off "${demo_overrides[@]}" > "$d.demo.log" 2>&1
  # Side by side: GRPO and MASA-efficient run at once, one thread each, so both see the same host speed; the
  # other variants follow one by one.
  together=() pids=()
  if [[ "$side_by_side" == 1 && " $variants " == *" grpo "* && " $variants " == *" masa-efficient "* ]]; then
    together=(grpo masa-efficient)
  fi
  for variant in "${together[@]}"; do train_variant "$variant" run.threads=1 & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid"; done
  for variant in $variants; do
    [[ " ${together[*]} " == *" $variant "* ]] || train_variant "$variant"
  done
  # The trained policies' gate on the unseen held-out problems (the paper's Fig. 5a protocol), with the shipped gate.
  for variant in masa masa-efficient; do
    [[ " $variants " == *" $variant "* ]] || continue
    "$bin" analyze masa-gate --config configs/masa/toy-masa-efficient.yaml --model "$d/$variant/export" \
      --data "$d/demo/data/heldout.jsonl" --out "$d/$variant/gate" log.progress=off "${overrides[@]}" > "$d.$variant.gate.log" 2>&1 ||
      echo "seed $seed $variant: gate analysis failed, see $d.$variant.gate.log"
  done
done
py="${INTROSPECT_VENV:-$HOME/.cache/introspect/venv}/bin/python"
"$py" scripts/masa_report.py "$out"
