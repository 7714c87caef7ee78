#!/usr/bin/env python3
"""End-to-end GRPO step time: introspect against TRL's GRPOTrainer on CPU, side by side in one run.

Both train the same random Qwen3-architecture model (Qwen3's tokenizer, so the LM head has its real 151,936
rows) on the same GSM8K prompts with the same settings: 8 prompts x G=8 per step, 64 new tokens, temperature 1,
one optimizer step per generation (64 sequences, 4 micro-batches of 16), clip 0.2, global token-mean loss
(TRL's "dapo", verl's token-mean), no KL, group std with eps 1e-4, lr 1e-6, the math-verify accuracy reward.
Each engine runs STEPS steps; the first is warm-up and is not counted.

Usage: benchmarks/grpo_step.py INTROSPECT_BINARY SHARED_DATA_DIR [--steps N] [--threads T]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

G, PROMPTS, NEW_TOKENS, MICRO = 8, 8, 64, 16


def build_model(dest, shared):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if os.path.exists(os.path.join(dest, "model.safetensors")):
        return
    os.makedirs(dest, exist_ok=True)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=151936, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=151645, torch_dtype="float32")
    Qwen3ForCausalLM(cfg).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(shared, "tokenizers", "qwen3", name), dest)


def prompts(shared, count):
    rows = []
    with open(os.path.join(shared, "math", "gsm8k", "test.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            rows.append({"prompt": row["question"] + "\nPut the final answer in \\boxed{}.",
                         "answer": row["answer"].split("####")[-1].strip()})
            if len(rows) == count:
                break
    return rows


def run_trl(model_dir, rows, steps, threads, workdir):
    from datasets import Dataset
    from math_verify import parse, verify
    from trl import GRPOConfig, GRPOTrainer

    # TRL's own accuracy_reward expects chat-format completions; this is the same math-verify check on text.
    def accuracy_reward(completions, solution, **kwargs):
        return [float(verify(parse("$" + s + "$"), parse(c))) for c, s in zip(completions, solution)]

    torch.set_num_threads(threads)
    data = Dataset.from_list([{"prompt": r["prompt"], "solution": r["answer"]} for r in rows])
    args = GRPOConfig(output_dir=os.path.join(workdir, "trl"), use_cpu=True, bf16=False, fp16=False,
                      per_device_train_batch_size=MICRO, gradient_accumulation_steps=PROMPTS * G // MICRO,
                      num_generations=G, max_completion_length=NEW_TOKENS, temperature=1.0, learning_rate=1e-6,
                      beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
                      max_steps=steps, logging_steps=1, report_to=[], save_strategy="no", seed=0,
                      dataloader_num_workers=0, disable_dropout=True, gradient_checkpointing=False)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[accuracy_reward], args=args, train_dataset=data)
    phases = {"generate": [], "score": [], "step": []}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            phases[name].append(time.perf_counter() - t)
            return out
        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)
    step_start = [None]
    original_step = trainer.training_step

    def training_step(*a, **k):
        # An optimizer step spans gradient_accumulation_steps calls; the first one generates for all of them.
        if trainer._step % trainer.current_gradient_accumulation_steps == 0:
            step_start[0] = time.perf_counter()
        out = original_step(*a, **k)
        if trainer._step % trainer.current_gradient_accumulation_steps == 0:
            phases["step"].append(time.perf_counter() - step_start[0])
        return out

    trainer.training_step = training_step
    trainer.train()
    return phases


def run_introspect(binary, model_dir, rows, steps, threads, workdir):
    data = os.path.join(workdir, "prompts.jsonl")
    with open(data, "w") as f:
        for r in rows:
            f.write(json.dumps({"problem": r["prompt"], "answer": r["answer"]}) + "\n")
    config = os.path.join(workdir, "introspect.yaml")
    with open(config, "w") as f:
        f.write(f"""run: {{out_dir: {os.path.join(workdir, "introspect")}, threads: {threads}}}
log: {{progress: off}}
model: {{path: {model_dir}}}
data: {{train_path: {data}, chat_template: plain, max_prompt_tokens: 512, shuffle: false}}
rollout: {{n: {G}, temperature: 1.0, max_new_tokens: {NEW_TOKENS}, max_batch: 64, seed: 0}}
algo: {{adv_estimator: grpo, adv_epsilon: 1.0e-4, clip_ratio_low: 0.2, clip_ratio_high: 0.2, loss_agg_mode: token-mean}}
train: {{total_steps: {steps}, prompts_per_step: {PROMPTS}, mini_batch_size: {PROMPTS * G}, micro_batch_size: {MICRO},
        lr: 1.0e-6, weight_decay: 0.0, grad_clip: 1.0, save_every: 0}}
reward: {{modules: [math]}}
""")
    subprocess.run([binary, "train", "--config", config], check=True, stdout=subprocess.DEVNULL)
    metrics = [json.loads(line) for line in open(os.path.join(workdir, "introspect", "metrics.jsonl"))]
    return {"generate": [m["time/generate"] for m in metrics], "score": [m["time/score"] for m in metrics],
            "old_logprob": [m["time/old_logprob"] for m in metrics], "update": [m["time/update"] for m in metrics],
            "step": [m["time/step"] for m in metrics],
            "response_tokens": [m["response_length/mean"] * PROMPTS * G for m in metrics]}


def mean_after_warmup(values):
    rest = values[1:] or values
    return sum(rest) / len(rest)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("shared")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    cache = os.path.expanduser("~/.cache/introspect/bench/grpo_qwen3_tiny")
    build_model(cache, a.shared)
    rows = prompts(a.shared, PROMPTS * a.steps)
    with tempfile.TemporaryDirectory() as work:
        ours = run_introspect(a.binary, cache, rows, a.steps, a.threads, work)
        trl = run_trl(cache, rows, a.steps, a.threads, work)
    print(f"GRPO step on CPU ({a.threads} threads), {PROMPTS} prompts x G={G}, {NEW_TOKENS} new tokens, "
          f"Qwen3-arch 4x128 with the 151,936-token head; mean of steps 2..{a.steps}")
    print(f"{'phase':<14}{'introspect s':>14}{'TRL s':>10}")
    for phase in ("generate", "score", "old_logprob", "update", "step"):
        o = mean_after_warmup(ours[phase]) if ours.get(phase) else float("nan")
        if phase == "update":
            t = mean_after_warmup([s - g - r for s, g, r in zip(trl["step"], trl["generate"], trl["score"])])
            label = "update*"
        elif phase == "old_logprob":
            t, label = float("nan"), phase
        else:
            t, label = mean_after_warmup(trl[phase]), phase
        print(f"{label:<14}{o:>14.2f}{t:>10.2f}")
    ratio = mean_after_warmup(trl["step"]) / mean_after_warmup(ours["step"])
    print("* TRL's update is its step time minus generation and scoring (it includes TRL's own bookkeeping); "
          "with one update per generation neither engine runs a separate old-logprob pass.")
    print(f"step-time ratio TRL / introspect: {ratio:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    sys.exit(main())
