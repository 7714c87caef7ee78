#!/usr/bin/env python3
"""G2RL's feature cost inside the trainer: time/old_logprob (the whole pass: model forward plus the chunked
log-prob head) with and without g2rl.enabled, on the CPU benchmark model of grpo_step.py (Qwen3-arch 4 x 128 with
the 151,936-token head, 8 prompts x G=8, 64 new tokens). The runs alternate, ROUNDS times each, and the
medians of steps 2.. are compared.

Usage: benchmarks/g2rl_overhead.py INTROSPECT_BINARY SHARED_DATA_DIR [--rounds 3] [--steps 3] [--threads 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpo_step import G, NEW_TOKENS, PROMPTS, build_model, prompts  # noqa: E402


def run(binary, model, data, work, name, steps, threads, g2rl):
    out = os.path.join(work, name)
    cmd = [binary, "train", "--out", out, f"model.path={model}", f"data.train_path={data}", "data.chat_template=plain",
           "data.max_prompt_tokens=512", "data.shuffle=false", f"rollout.n={G}", f"rollout.max_new_tokens={NEW_TOKENS}",
           f"train.total_steps={steps}", f"train.prompts_per_step={PROMPTS}", f"train.mini_batch_size={PROMPTS * G}",
           "train.micro_batch_size=16", "train.save_every=0", "train.old_logprob=recompute", f"run.threads={threads}",
           "log.progress=off", "--config", os.path.join(work, "base.yaml")]
    if g2rl:
        cmd.append("g2rl.enabled=true")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [m["time/old_logprob"] for m in metrics[1:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("shared")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    model = os.path.expanduser("~/.cache/introspect/bench/grpo_qwen3_tiny")
    build_model(model, a.shared)
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "prompts.jsonl")
        with open(data, "w") as f:
            for r in prompts(a.shared, PROMPTS * a.steps):
                f.write(json.dumps({"problem": r["prompt"], "answer": r["answer"]}) + "\n")
        with open(os.path.join(work, "base.yaml"), "w") as f:
            f.write("reward: {modules: [math]}\n")
        plain, features = [], []
        for i in range(a.rounds):
            plain += run(a.binary, model, data, work, f"plain{i}", a.steps, a.threads, False)
            features += run(a.binary, model, data, work, f"g2rl{i}", a.steps, a.threads, True)
    p, f = statistics.median(plain), statistics.median(features)
    print(f"old-logprob pass, median of {len(plain)} steps: plain {p:.3f} s, with G2RL features {f:.3f} s; "
          f"overhead {100 * (f / p - 1):.1f}% (goal <= 3%)")


if __name__ == "__main__":
    main()
