"""Parity of introspect's decoder against HF transformers (the reference nobody here wrote).

For random tiny configs of each supported model type, saved with save_pretrained:
  - our fp32 logits match transformers' within 1e-4 max abs error, on varied inputs including left padding;
  - a checkpoint we export (sharded, by our writer) loads in AutoModelForCausalLM and gives the same logits.
Usage: hf_models.py PATH/TO/model_forward
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tiny_configs import CONFIGS, randomise

TOOL = sys.argv[1]
TOL = 1e-4
torch.manual_seed(0)

def batches(vocab):
    """A full batch, a left-padded one (as generation uses), a right-padded one, and a single long row."""
    g = torch.Generator().manual_seed(1)
    out = []
    ids = torch.randint(0, vocab, (2, 17), generator=g)
    out.append((ids, torch.ones_like(ids)))
    ids = torch.randint(0, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, :11] = 0
    out.append((ids, mask))
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    out.append((ids, mask))
    ids = torch.randint(0, vocab, (1, 64), generator=g)
    out.append((ids, torch.ones_like(ids)))
    return out


def hf_logits(model, ids, mask):
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()


def ours(ckpt, ids, mask, work, export=None):
    inp = work / "batch.json"
    inp.write_text(json.dumps({"input_ids": ids.tolist(), "attention_mask": mask.tolist()}))
    out = work / "out.safetensors"
    cmd = [TOOL, str(ckpt), str(inp), str(out)] + (["--export", str(export)] if export else [])
    subprocess.run(cmd, check=True)
    return load_file(str(out))["logits"]


def masked_max_abs(a, b, mask):
    return (a - b).abs()[mask.bool()].max().item()


failures = []
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for name, config in CONFIGS.items():
        model = AutoModelForCausalLM.from_config(config).eval()
        randomise(model)
        ckpt = tmp / name
        model.save_pretrained(ckpt)
        worst = 0.0
        for i, (ids, mask) in enumerate(batches(config.vocab_size)):
            ref = hf_logits(model, ids, mask)
            got = ours(ckpt, ids, mask, tmp)
            err = masked_max_abs(got, ref, mask)
            worst = max(worst, err)
            scale = ref.abs().max().item()
            print(f"{name:24s} batch {i} {tuple(ids.shape)}: max |logit| {scale:7.3f}  max abs err {err:.2e}")
        # Export with our writer (sharded), load with transformers, compare with the original model.
        export = tmp / (name + "-export")
        ids, mask = batches(config.vocab_size)[1]
        ours(ckpt, ids, mask, tmp, export=export)
        exported = AutoModelForCausalLM.from_pretrained(export, attn_implementation="eager").eval()
        export_err = masked_max_abs(hf_logits(exported, ids, mask), hf_logits(model, ids, mask), mask)
        shards = len(list(export.glob("*.safetensors")))
        print(f"{name:24s} export ({shards} shards) reloaded by transformers: max abs err {export_err:.2e}")
        if worst > TOL:
            failures.append(f"{name}: logits differ by {worst:.2e} > {TOL}")
        if export_err > TOL:
            failures.append(f"{name}: exported checkpoint differs by {export_err:.2e}")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"all {len(CONFIGS)} configs within {TOL}")
