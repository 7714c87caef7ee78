"""Issue D benchmark: generated tokens/s, introspect vs HF transformers generate, on CPU, side by side: the same
random Qwen3-architecture model (~15M parameters), the same 64 prompts, 256 new tokens at most with a different
stop length per sequence (32..256), sampling at temperature 1, fp32, the same thread count. Throughput counts the
useful tokens (each sequence up to its own stop length). HF stops each row with a per-row StoppingCriteria but,
as a static batch, keeps stepping until the longest row ends. introspect runs with continuous batching (64 slots:
finished rows leave the batch; 16 slots: freed slots take pending sequences) and, for comparison, as a static
batch where every row runs 256 tokens. Goal: >= 3x HF.
Usage: generate_throughput.py BUILD_DIR [THREADS]"""
import json, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen3Config, StoppingCriteria, StoppingCriteriaList

build = Path(sys.argv[1])
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
config = Qwen3Config(vocab_size=32000, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                     num_attention_heads=8, num_key_value_heads=4, head_dim=32, tie_word_embeddings=True,
                     max_position_embeddings=512, eos_token_id=None, bos_token_id=None, pad_token_id=0)
model = AutoModelForCausalLM.from_config(config).eval()
params = sum(p.numel() for p in model.parameters())
g = torch.Generator().manual_seed(1)
B, MAX_NEW = 64, 256
prompt_lens = torch.randint(16, 49, (B,), generator=g).tolist()
stops = torch.randint(32, MAX_NEW + 1, (B,), generator=g).tolist()
stops[0] = MAX_NEW
prompts = [torch.randint(1, config.vocab_size, (n,), generator=g).tolist() for n in prompt_lens]
useful = sum(stops)
work = Path(tempfile.mkdtemp())
model.save_pretrained(work / "model")
(work / "prompts.jsonl").write_text("".join(json.dumps({"prompt_ids": p, "max_new_tokens": s}) + "\n"
                                            for p, s in zip(prompts, stops)))
print(f"model: Qwen3 architecture, {params / 1e6:.1f}M parameters; {B} prompts of 16..48 tokens; stop lengths "
      f"32..256 ({useful} useful tokens); {threads} threads")


class PerRowStop(StoppingCriteria):
    def __init__(self, start):
        self.start = start

    def __call__(self, input_ids, scores, **kwargs):
        produced = input_ids.shape[1] - self.start
        return torch.tensor([produced >= s for s in stops], dtype=torch.bool)


width = max(prompt_lens)
ids = torch.zeros(B, width, dtype=torch.long)
mask = torch.zeros(B, width, dtype=torch.long)
for i, p in enumerate(prompts):  # left padding, as HF generation requires
    ids[i, width - len(p):] = torch.tensor(p)
    mask[i, width - len(p):] = 1
with torch.no_grad():
    t0 = time.perf_counter()
    model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                   max_new_tokens=MAX_NEW, stopping_criteria=StoppingCriteriaList([PerRowStop(width)]))
    hf_s = time.perf_counter() - t0
hf_rate = useful / hf_s
print(f"HF transformers generate: {hf_s:7.2f} s  {hf_rate:8.1f} useful tok/s")


def ours(max_batch, *extra):
    out = subprocess.run([str(build / "bin/bench_generate"), str(work / "model"), str(work / "prompts.jsonl"),
                          str(max_batch), str(threads), *extra], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


for label, args in [("continuous batching, 64 slots", (64,)), ("continuous batching, 16 slots", (16,)),
                    ("static batch (all rows run 256)", (64, "--static"))]:
    r = ours(*args)
    print(f"introspect {label:32s}: {r['seconds']:7.2f} s  {r['useful_tokens_per_s']:8.1f} useful tok/s  "
          f"ratio {r['useful_tokens_per_s'] / hf_rate:.2f}x (goal >= 3)")
