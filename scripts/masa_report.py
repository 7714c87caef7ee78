"""Summarises scripts/reproduce_masa.sh: a markdown table (table.md) and plots (PNG) from each run's metrics.jsonl.

Wall time is the sum of the steps' time/step (evaluation excluded) minus time/masa_audit, the rollouts that only
measure the gate. With masa.gate_min_precision the gate learns from those rollouts, so the trainer generates them with
the kept prompts' solutions and logs no time/masa_audit: they count. Time to GRPO's accuracy: the wall time at the
first evaluation where a run's held-out accuracy reaches GRPO's final one (same seed); the speed-up is GRPO's wall
time over that (the paper's measure). Held-out accuracy on a toy moves by a few points from one evaluation to the
next, so two stricter ratios follow it: against GRPO's own first evaluation at its final accuracy, and on the trailing
mean of the last SMOOTH evaluations (GRPO's final trailing mean, first reached). Summaries of speed-ups are geometric
means over the seeds that reach, with the count of seeds above 1. Gate precision is measured twice: during training,
on the audited gated prompts (masa/gate_*), and after it on the unseen held-out problems (gate/gate.json of each MASA
run, from introspect analyze masa-gate), beside that set's base rate, the precision of gating every problem. The
cutoff ablation compares MASA-efficient with masa-efficient-nocutoff (the same run with masa.cutoff_scale=0).
Usage: masa_report.py RUN_DIR
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VARIANTS = ("grpo", "masa", "masa-efficient")
out = sys.argv[1]


def load(seed, variant):
    rows = [json.loads(l) for l in open(os.path.join(out, f"seed{seed}", variant, "metrics.jsonl"))]
    clock, t = [], 0.0
    for r in rows:
        t += r.get("time/step", 0.0) - r.get("time/masa_audit", 0.0)
        clock.append(t)
    return rows, clock


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def window(rows, key, lo, hi):
    return mean([r.get(key) for r in rows if lo <= r["step"] <= hi])


def geomean(xs):
    xs = [x for x in xs if x is not None]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


SMOOTH = 5


def smoothed(evals):
    """(step, accuracy, clock) with accuracy the mean of the last SMOOTH evaluations, from the SMOOTH-th on."""
    return [(s, mean([a for _, a, _ in evals[i + 1 - SMOOTH:i + 1]]), c)
            for i, (s, _, c) in enumerate(evals) if i + 1 >= SMOOTH]


def evaluations(rows, clock):
    """(step, held-out accuracy, wall time) at each evaluation."""
    return [(r["step"], r["eval/accuracy"], c) for r, c in zip(rows, clock) if r.get("eval/accuracy") is not None]


def first_reach(evals, target):
    return next((c for _, a, c in evals if a >= target - 1e-12), None)


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


seeds = sorted(int(d[4:]) for d in os.listdir(out) if d.startswith("seed") and os.path.isdir(os.path.join(out, d)))
table = ["| seed | run | acc. before | acc. after | wall s | s to GRPO's final acc. | speed-up | "
         "speed-up vs GRPO's first reach | smoothed speed-up | "
         "abs(p - p_hat) first 5 / last 5 steps | gated | gate precision | gate recall | "
         "unseen: gate precision / base rate / recall | cutoff-truncated | meta token share | solution tokens/step |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
curves = {v: [] for v in VARIANTS}
summary = {v: {k: [] for k in ("speedup", "strict", "smooth", "after", "precision", "unseen", "base", "err_first",
                                "err_last", "share")} for v in VARIANTS}
for seed in seeds:
    runs = {v: load(seed, v) for v in VARIANTS if os.path.exists(os.path.join(out, f"seed{seed}", v, "metrics.jsonl"))}
    # MASA_REPRO_VARIANTS may leave GRPO out: that seed then has no target, so its speed-ups are n/a and uncounted.
    target = grpo_time = grpo_first = smooth_target = None
    if "grpo" in runs:
        grpo_evals = evaluations(*runs["grpo"])
        _, target, grpo_time = grpo_evals[-1]
        grpo_first = first_reach(grpo_evals, target)
        grpo_smooth = smoothed(grpo_evals)
        smooth_target = grpo_smooth[-1][1] if grpo_smooth else None
    for v, (rows, clock) in runs.items():
        evals = evaluations(rows, clock)
        curves[v].append(evals)
        reach = first_reach(evals, target) if target is not None else None
        speedup = grpo_time / reach if reach else None
        strict = grpo_first / reach if reach else None
        smooth_reach = first_reach(smoothed(evals), smooth_target) if smooth_target is not None else None
        smooth = grpo_time / smooth_reach if smooth_reach else None
        last = rows[-1]["step"]
        err_first = window(rows, "reward/masa/abs_pass_error", 1, 5)
        err_last = window(rows, "reward/masa/abs_pass_error", last - 4, last)
        audited = sum(r.get("masa/gate_audited", 0) for r in rows)
        audited_zero = sum(r.get("masa/gate_audited_zero_var", 0) for r in rows)
        gated = sum(r.get("masa/gated", 0) for r in rows)
        prompts = sum(r.get("masa/gated", 0) + r.get("masa/kept", 0) for r in rows)
        kept_zero = sum(r.get("masa/kept_zero_var", 0) for r in rows)
        precision = audited_zero / audited if audited else None
        recall = None
        if precision is not None and precision * gated + kept_zero > 0:
            recall = precision * gated / (precision * gated + kept_zero)
        efficient_rows = [r for r in rows if r.get("masa/efficient")]
        cut = mean([r.get("masa/cutoff_truncated_frac") for r in efficient_rows])
        share = mean([r.get("masa/meta_token_share") for r in rows])
        gate_file = os.path.join(out, f"seed{seed}", v, "gate", "gate.json")
        unseen = json.load(open(gate_file)) if os.path.exists(gate_file) else {}
        sol_tokens = mean([r.get("rollout/solution_tokens") for r in rows])
        table.append(f"| {seed} | {v} | {evals[0][1]:.3f} | {evals[-1][1]:.3f} | {clock[-1]:.1f} | {fmt(reach, 1)} | "
                     f"{fmt(speedup, 2)} | {fmt(strict, 2)} | {fmt(smooth, 2)} | {fmt(err_first)} / {fmt(err_last)} | "
                     f"{fmt(gated / prompts if prompts else None)} | {fmt(precision)} ({int(audited)} audited) | "
                     f"{fmt(recall)} | {fmt(unseen.get('precision'))} / {fmt(unseen.get('base_rate'))} / "
                     f"{fmt(unseen.get('recall'))} | {fmt(cut)} | {fmt(share)} | {fmt(sol_tokens, 0)} |")
        s = summary[v]
        if target is not None:
            s["speedup"].append(speedup)
            s["strict"].append(strict)
            s["smooth"].append(smooth)
        s["after"].append(evals[-1][1])
        s["precision"].append(precision)
        s["unseen"].append(unseen.get("precision"))
        s["base"].append(unseen.get("base_rate"))
        s["err_first"].append(err_first)
        s["err_last"].append(err_last)
        s["share"].append(share)
table.append("")
table.append("| run | mean acc. after | speed-up to GRPO's final acc. | vs GRPO's first reach | smoothed | "
             "mean abs(p - p_hat) first / last | mean gate precision | mean unseen gate precision / base rate | "
             "mean meta token share |")
table.append("|---|---|---|---|---|---|---|---|---|")
for v in VARIANTS:
    s = summary[v]
    # How many seeds came out ahead of GRPO (above 1): the geometric mean alone hides whether the gain is robust.
    reached = [f"{fmt(geomean(s[k]), 2)} ({sum(x is not None for x in s[k])}/{len(s[k])} reached, "
               f"{sum(x is not None and x > 1 for x in s[k])} above 1)" for k in ("speedup", "strict", "smooth")]
    table.append(f"| {v} | {fmt(mean(s['after']))} | {' | '.join(reached)} | "
                 f"{fmt(mean(s['err_first']))} / {fmt(mean(s['err_last']))} | {fmt(mean(s['precision']))} | "
                 f"{fmt(mean(s['unseen']))} / {fmt(mean(s['base']))} "
                 f"({sum(x is not None for x in s['unseen'])}/{len(s['unseen'])} measured) | {fmt(mean(s['share']))} |")

# The cutoff ablation: MASA-efficient with and without the early cutoff, over the efficient steps (where it acts).
def efficient_phase(seed, variant):
    path = os.path.join(out, f"seed{seed}", variant, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows, _ = load(seed, variant)
    phase = [r for r in rows if r.get("masa/efficient")]
    solved = [r for r in phase if r.get("masa/kept", 0) > 0]  # a step that gated every prompt has no cap or length
    evals = [r["eval/accuracy"] for r in rows if r.get("eval/accuracy") is not None]
    return {"after": evals[-1] if evals else None, "tokens": sum(r.get("rollout/solution_tokens", 0) for r in phase),
            "length": mean([r.get("solution/response_length") for r in solved]),
            "truncated": mean([r.get("masa/cutoff_truncated_frac") for r in solved]),
            "cap": mean([r.get("masa/cutoff_mean") for r in solved])}


# Total tokens also move with how many prompts each run gates; the mean length per rollout does not.
table += ["", "Early cutoff ablation (MASA-efficient, the efficient steps only; solution tokens are those trained on):", "",
          "| seed | acc. after: cutoff / off | solution tokens: cutoff / off | tokens saved | "
          "mean solution length: cutoff / off | mean cap | truncated |",
          "|---|---|---|---|---|---|---|"]
saved, deltas = [], []
for seed in seeds:
    on, off = efficient_phase(seed, "masa-efficient"), efficient_phase(seed, "masa-efficient-nocutoff")
    if not on or not off:
        continue
    saved.append(1 - on["tokens"] / off["tokens"] if off["tokens"] else None)
    deltas.append(on["after"] - off["after"] if on["after"] is not None and off["after"] is not None else None)
    table.append(f"| {seed} | {fmt(on['after'])} / {fmt(off['after'])} | {on['tokens']:.0f} / {off['tokens']:.0f} | "
                 f"{fmt(saved[-1])} | {fmt(on['length'], 2)} / {fmt(off['length'], 2)} | {fmt(on['cap'], 1)} | "
                 f"{fmt(on['truncated'], 4)} |")
if saved:
    table.append(f"| mean | {fmt(mean(deltas))} (cutoff - off) | | {fmt(mean(saved))} | | | |")
open(os.path.join(out, "table.md"), "w").write("\n".join(table) + "\n")
print("\n".join(table))

colors = {"grpo": "tab:blue", "masa": "tab:green", "masa-efficient": "tab:red"}
fig, ax = plt.subplots(figsize=(6, 3.5))
for v in VARIANTS:
    for i, ev in enumerate(curves[v]):
        ax.plot([c for _, _, c in ev], [a for _, a, _ in ev], color=colors[v], alpha=0.7, label=v if i == 0 else None)
ax.set_xlabel("training wall time (s, evaluation excluded)")
ax.set_ylabel("held-out accuracy")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "accuracy_vs_time.png"), dpi=100)

fig, ax = plt.subplots(figsize=(6, 3.5))
for v in ("masa", "masa-efficient"):
    for i, seed in enumerate(seeds):
        if not os.path.exists(os.path.join(out, f"seed{seed}", v, "metrics.jsonl")):
            continue  # MASA_REPRO_VARIANTS left it out
        rows, _ = load(seed, v)
        pts = [(r["step"], r["reward/masa/abs_pass_error"]) for r in rows if "reward/masa/abs_pass_error" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[v], alpha=0.6, label=v if i == 0 else None)
ax.set_xlabel("step")
ax.set_ylabel("|p - p_hat| (meta rollouts)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "pass_rate_error.png"), dpi=100)
print("wrote", os.path.join(out, "table.md"), "accuracy_vs_time.png and pass_rate_error.png")
