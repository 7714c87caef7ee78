"""Greedy generation of `introspect generate` against HF transformers' generate, for the random tiny configs
of each model type (several prompt lengths in one continuous-batching run) and for stories260K.
Usage: hf_generate.py PATH/TO/introspect SHARED_DATA_DIR"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tiny_configs import CONFIGS, randomise

BIN, DATA = sys.argv[1], Path(sys.argv[2])
NEW = 24
torch.manual_seed(0)


def hf_greedy(model, prompt, new_tokens, eos):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=0)
    tokens = out[0, len(prompt):].tolist()
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


def ours(ckpt, prompts, new_tokens, work):
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt_ids": p}) + "\n" for p in prompts))
    subprocess.run([BIN, "generate", "--model", str(ckpt), "--prompts", str(work / "prompts.jsonl"), "--out",
                    str(work / "out.jsonl"), "--greedy", "--max-new-tokens", str(new_tokens), "--max-batch", "3"],
                   check=True, capture_output=True)
    return [json.loads(l)["ids"] for l in (work / "out.jsonl").read_text().splitlines()]


failed = False
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    g = torch.Generator().manual_seed(2)
    for name, config in CONFIGS.items():
        config.eos_token_id = 7
        model = AutoModelForCausalLM.from_config(config).eval()
        randomise(model)
        model.save_pretrained(tmp / name)
        prompts = [torch.randint(0, config.vocab_size, (n,), generator=g).tolist() for n in (1, 3, 5, 8, 13, 21)]
        want = [hf_greedy(model, p, NEW, 7) for p in prompts]
        got = ours(tmp / name, prompts, NEW, tmp)
        same = sum(a == b for a, b in zip(got, want))
        print(f"{name:24s} greedy {NEW} tokens: {same}/{len(prompts)} prompts identical to HF generate")
        failed |= same != len(prompts)
    stories = DATA / "models/stories260K"
    model = AutoModelForCausalLM.from_pretrained(stories).eval()
    want = hf_greedy(model, [1], 200, 2)
    golden = json.loads((stories / "greedy200.json").read_text())["greedy_ids"]
    got = ours(stories, [[1]], 200, tmp)[0]
    print(f"stories260K greedy 200: ours == HF generate: {got == want}, HF == golden: {want == golden}")
    failed |= got != want or want != golden
sys.exit(1 if failed else 0)
