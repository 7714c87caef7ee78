"""scripts/masa_report.py on made-up runs whose speed-ups are worked out by hand below.

Every run evaluates at every step. GRPO takes 1 s a step and ends at 0.5: it first reaches 0.5 at 2 s (step 2), ends
at 10 s, and its trailing mean of 5 evaluations ends at 0.49, first reached at 10 s. time/masa_audit is left out of
wall time, so each MASA-efficient step below costs time/step - 0.2 s.
  seed 1: 1 s a step, reaches 0.5 at step 4 (4 s): 10/4 = 2.5, strict 2/4 = 0.5; trailing mean >= 0.49 at step 8,
          10/8 = 1.25.
  seed 2: never reaches 0.5 (n/a everywhere).
  seed 3: seed 1 at 2 s a step: 10/8 = 1.25, strict 2/8 = 0.25, smoothed 10/16 = 0.625.
  seed 4: no GRPO run (MASA_REPRO_VARIANTS left it out): n/a, and not counted in the summaries below. Its cutoff
          ablation trains on 80 solution tokens a step against 100 without the cutoff: 1 - 800/1000 = 0.200 saved,
          final accuracy 0.5 - 0.45 = 0.050.
Summaries are geometric means over the seeds that reach: sqrt(2.5 * 1.25) = 1.77, sqrt(0.5 * 0.25) = 0.35,
sqrt(1.25 * 0.625) = 0.88. Above 1 (GRPO's time beaten): 2 seeds by the paper's measure, 0 strict, 1 smoothed.
Usage: masa_report_check.py path/to/masa_report.py
"""
import json
import os
import subprocess
import sys
import tempfile

GRPO = [0.1, 0.5, 0.2, 0.3, 0.4, 0.45, 0.5, 0.5, 0.5, 0.5]
RISING = [0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


def write_run(path, accuracies, step_time, audit_time=0.0, solution_tokens=None):
    os.makedirs(path)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for step, accuracy in enumerate(accuracies, 1):
            row = {"step": step, "time/step": step_time, "eval/accuracy": accuracy}
            if audit_time:
                row["time/masa_audit"] = audit_time
            if solution_tokens:
                row.update({"masa/efficient": 1, "masa/kept": 1, "rollout/solution_tokens": solution_tokens})
            f.write(json.dumps(row) + "\n")


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def main():
    with tempfile.TemporaryDirectory() as out:
        for seed, (accuracies, step_time) in {1: (RISING, 1.2), 2: ([0.45] * 10, 1.2), 3: (RISING, 2.2)}.items():
            write_run(os.path.join(out, f"seed{seed}", "grpo"), GRPO, 1.0)
            write_run(os.path.join(out, f"seed{seed}", "masa-efficient"), accuracies, step_time, audit_time=0.2)
        write_run(os.path.join(out, "seed4", "masa-efficient"), RISING, 1.0, solution_tokens=80)
        write_run(os.path.join(out, "seed4", "masa-efficient-nocutoff"), [0.45] * 10, 1.0, solution_tokens=100)
        subprocess.run([sys.executable, sys.argv[1], out], check=True, stdout=subprocess.DEVNULL)
        lines = open(os.path.join(out, "table.md")).read().splitlines()
    header = cells(lines[0])
    col = {name: header.index(name) for name in ("speed-up", "speed-up vs GRPO's first reach", "smoothed speed-up")}
    per_seed = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        c = cells(line)
        per_seed[(int(c[0]), c[1])] = tuple(c[col[k]] for k in col)
    expected = {(1, "grpo"): ("5.00", "1.00", "1.00"), (1, "masa-efficient"): ("2.50", "0.50", "1.25"),
                (2, "masa-efficient"): ("n/a", "n/a", "n/a"), (3, "masa-efficient"): ("1.25", "0.25", "0.62"),
                (4, "masa-efficient"): ("n/a", "n/a", "n/a")}
    failures = [f"seed {k[0]} {k[1]}: {per_seed.get(k)} != {v}" for k, v in expected.items() if per_seed.get(k) != v]
    summary = next(cells(l) for l in lines if l.startswith("| masa-efficient |"))
    want = ["1.77 (2/3 reached, 2 above 1)", "0.35 (2/3 reached, 0 above 1)", "0.88 (2/3 reached, 1 above 1)"]
    if summary[2:5] != want:
        failures.append(f"summary {summary[2:5]} != {want}")
    ablation = [cells(l) for l in lines if l.startswith("| 4 | 0.500 / 0.450 |")]
    if [c[3] for c in ablation] != ["0.200"]:
        failures.append(f"seed 4 cutoff ablation rows {ablation} do not save 0.200")
    ablation_mean = next((cells(l) for l in lines if l.startswith("| mean | ")), None)
    if not ablation_mean or ablation_mean[1] != "0.050 (cutoff - off)":
        failures.append(f"cutoff ablation mean {ablation_mean} != 0.050 (cutoff - off)")
    for f in failures:
        print("FAIL", f)
    print("ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
