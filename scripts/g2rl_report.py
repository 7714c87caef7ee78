#!/usr/bin/env python3
"""The table and plots of scripts/reproduce_g2rl.sh: GRPO against G2RL on the digit-set toy, per seed and as mean ± sd.

Usage: scripts/g2rl_report.py OUT_DIR     (OUT_DIR/seed{1,2,3}/{grpo,g2rl}/ with metrics.jsonl and geometry/)
Writes OUT_DIR/table.md and OUT_DIR/heldout_accuracy.png.
"""
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
rows, curves = [], {}
for seed in (1, 2, 3):
    for variant in ("grpo", "g2rl"):
        run = os.path.join(out, f"seed{seed}", variant)
        m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
        ev = [(x["step"], x["eval/accuracy"]) for x in m if x.get("eval/accuracy") is not None]
        geo = json.load(open(os.path.join(run, "geometry", "geometry.json")))
        samples = [json.loads(l) for l in open(os.path.join(run, "geometry", "samples.jsonl"))]
        answers = {}
        for s in samples:
            if s["correct"]:
                answers.setdefault(s["problem"], set()).add(s["text"])
        distinct = sum(len(a) for a in answers.values()) / max(1, len(answers))
        def stat(kind, key):  # a kind with no pairs has null statistics
            value = geo["stats"][kind][key]
            return float("nan") if value is None else value
        rows.append(dict(seed=seed, variant=variant, before=ev[0][1], after=ev[-1][1],
                         neg=stat("all", "neg_frac"), neg_cc=stat("correct_correct", "neg_frac"),
                         cos=stat("all", "mean_cos"), distinct=distinct))
        curves.setdefault(variant, []).append(ev)
lines = ["| seed | run | held-out acc. before | after | cos(Φ) < 0, all pairs | correct-correct pairs | mean cos | "
         "distinct correct answers per problem (of 8) |", "|---|---|---|---|---|---|---|---|"]
lines += [f"| {r['seed']} | {r['variant']} | {r['before']:.3f} | {r['after']:.3f} | {100 * r['neg']:.1f}% | "
          f"{100 * r['neg_cc']:.1f}% | {r['cos']:.3f} | {r['distinct']:.2f} |" for r in rows]
def mean_sd(values):
    mean = sum(values) / len(values)
    return mean, (sum((x - mean) ** 2 for x in values) / (len(values) - 1)) ** 0.5
for v in ("grpo", "g2rl"):
    sel = [r for r in rows if r["variant"] == v]
    cells = [mean_sd([r[k] for r in sel]) for k in ("after", "neg", "neg_cc", "cos", "distinct")]
    (a, asd), (n, nsd), (c, csd), (mc, mcsd), (d, dsd) = cells
    lines.append(f"| mean ± sd | {v} | | {a:.3f} ± {asd:.3f} | {100 * n:.1f} ± {100 * nsd:.1f}% | "
                 f"{100 * c:.1f} ± {100 * csd:.1f}% | {mc:.3f} ± {mcsd:.3f} | {d:.2f} ± {dsd:.2f} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
fig, ax = plt.subplots(figsize=(6, 3.5))
for v, color in (("grpo", "tab:blue"), ("g2rl", "tab:red")):
    for i, ev in enumerate(curves[v]):
        ax.plot([p[0] for p in ev], [p[1] for p in ev], color=color, alpha=0.7, label=v if i == 0 else None)
ax.set_xlabel("step"); ax.set_ylabel("held-out accuracy"); ax.legend(); ax.grid(alpha=0.3)
fig.tight_layout(); fig.savefig(os.path.join(out, "heldout_accuracy.png"), dpi=100)
print("wrote", os.path.join(out, "table.md"), "and heldout_accuracy.png")
