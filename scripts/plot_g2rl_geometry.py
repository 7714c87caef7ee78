#!/usr/bin/env python3
"""Draws the G2RL gradient-geometry histogram of `introspect analyze g2rl-geometry`.

Usage: scripts/plot_g2rl_geometry.py OUT_DIR
Reads OUT_DIR/geometry.json and writes OUT_DIR/cosine_histogram.png: the within-problem pairwise cos(Phi) as
bars per pair kind (correct-correct, mixed, incorrect-incorrect), stacked so their tops trace all pairs, with the
mean cosine and the fraction below zero of each kind in the legend (g2rl.md section 7, the paper's Fig. 3).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = [
    ("correct_correct", "correct-correct", "tab:green"),
    ("mixed", "mixed", "tab:orange"),
    ("incorrect_incorrect", "incorrect-incorrect", "tab:red"),
]


def describe(stats):
    if not stats or not stats.get("pairs"):
        return "no pairs"
    mean, neg = stats.get("mean_cos"), stats.get("neg_frac")
    text = f"{stats['pairs']} pairs"
    if mean is not None:
        text += f", mean {mean:.3f}"
    if neg is not None:
        text += f", <0 {100 * neg:.1f}%"
    return text


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    path = os.path.join(out, "geometry.json")
    try:
        with open(path) as f:
            g = json.load(f)
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"{path}: not valid JSON: {e}")
    try:
        hist = g["histogram"]
        edges, counts, stats = hist["edges"], hist["counts"], g["stats"]
    except KeyError as e:
        sys.exit(f"{path}: missing key {e}")
    if len(edges) != len(counts["all"]) + 1:
        sys.exit(f"{path}: {len(edges)} histogram edges for {len(counts['all'])} bins")

    left = edges[:-1]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    bottom = [0] * len(left)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label, color in KINDS:
        c = counts.get(key, [0] * len(left))
        ax.bar(left, c, width=widths, bottom=bottom, align="edge", color=color, edgecolor="white", linewidth=0.5,
               label=f"{label} ({describe(stats.get(key))})")
        bottom = [b + x for b, x in zip(bottom, c)]
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":")
    mean = stats["all"].get("mean_cos")
    if mean is not None:
        ax.axvline(mean, color="tab:blue", linewidth=1.2, linestyle="--", label=f"all: {describe(stats['all'])}")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("cos(Phi_i, Phi_j) within a problem")
    ax.set_ylabel("pairs")
    parts = os.path.normpath(str(g.get("model", ""))).split(os.sep)
    model = "/".join(parts[-2:])  # runs/x/grpo/export -> grpo/export
    ax.set_title(f"G2RL gradient geometry: {model}, {g.get('problems')} problems x {g.get('k')} responses, "
                 f"accuracy {g.get('accuracy', 0):.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    png = os.path.join(out, "cosine_histogram.png")
    fig.savefig(png, dpi=120)
    print(png)


if __name__ == "__main__":
    main()
