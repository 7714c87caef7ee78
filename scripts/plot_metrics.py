#!/usr/bin/env python3
"""Turns a run's metrics.jsonl into PNG curves under RUN/plots/.

Usage: scripts/plot_metrics.py RUN_DIR [KEY ...]
Without keys it plots the usual ones that the run has: reward, accuracy, held-out accuracy, response length,
entropy, clip fractions, KL, grad norm, learning rate, zero-std groups, throughput and phase times.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_KEYS = [
    "reward/mean", "accuracy", "eval/accuracy", "response_length/mean", "actor/entropy", "actor/clip_frac_high",
    "actor/clip_frac_low", "actor/kl", "actor/ppo_kl", "actor/grad_norm", "actor/lr", "rollout/zero_std_group_frac",
    "throughput/tokens_per_s", "sft/loss", "rollout/logprob_abs_diff",
]
PHASES = ["time/generate", "time/score", "time/old_logprob", "time/update"]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    path = os.path.join(run, "metrics.jsonl")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not valid JSON: {e}")
    if not rows:
        sys.exit(f"{path}: no metrics")
    keys = sys.argv[2:] or [k for k in DEFAULT_KEYS if any(r.get(k) is not None for r in rows)]
    out = os.path.join(run, "plots")
    os.makedirs(out, exist_ok=True)
    written = []
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if not points:
            print(f"skipping {key}: not in {path}", file=sys.stderr)
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        name = os.path.join(out, key.replace("/", "_") + ".png")
        fig.tight_layout()
        fig.savefig(name, dpi=100)
        plt.close(fig)
        written.append(name)
    phases = [k for k in PHASES if any(r.get(k) is not None for r in rows)]
    if phases and not sys.argv[2:]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [r["step"] for r in rows if r.get("time/step") is not None]
        bottom = [0.0] * len(steps)
        for k in phases:
            vals = [r.get(k) or 0.0 for r in rows if r.get("time/step") is not None]
            ax.bar(steps, vals, bottom=bottom, label=k.split("/")[1])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xlabel("step")
        ax.set_ylabel("seconds")
        ax.set_title("step time by phase")
        ax.legend(fontsize=8)
        name = os.path.join(out, "time_phases.png")
        fig.tight_layout()
        fig.savefig(name, dpi=100)
        plt.close(fig)
        written.append(name)
    print(f"wrote {len(written)} plots to {out}")


if __name__ == "__main__":
    main()
