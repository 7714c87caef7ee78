"""Parity of `introspect tokenize` against HF tokenizers (Rust) on every problem and solution of the shared
MATH500 and GSM8K test files, for Qwen3 and Llama-3: identical ids, and decode(encode(text)) == text exactly
(and equal to HF's own decode). Usage: hf_tokenizers.py PATH/TO/introspect SHARED_DATA_DIR
"""
import json
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

BIN, DATA = sys.argv[1], Path(sys.argv[2])


def texts():
    out = []
    for line in (DATA / "math/math500/test.jsonl").read_text().splitlines():
        row = json.loads(line)
        out += [row["problem"], row["solution"]]
    for line in (DATA / "math/gsm8k/test.jsonl").read_text().splitlines():
        row = json.loads(line)
        out += [row["question"], row["answer"]]
    return out


def run(args, lines):
    proc = subprocess.run([BIN, "tokenize", *args], input="\n".join(json.dumps(x) for x in lines) + "\n",
                          capture_output=True, text=True, check=True)
    return [json.loads(l) for l in proc.stdout.splitlines()]


corpus = texts()
failed = False
for name in ["qwen3", "llama3"]:
    path = DATA / "tokenizers" / name / "tokenizer.json"
    ref = Tokenizer.from_file(str(path))
    want = [e.ids for e in ref.encode_batch(corpus, add_special_tokens=False)]
    got = run(["--tokenizer", str(path)], corpus)
    same_ids = sum(g == w for g, w in zip(got, want))
    decoded = run(["--tokenizer", str(path), "--decode"], got)
    exact = sum(d == t for d, t in zip(decoded, corpus))
    same_decode = sum(d == ref.decode(w, skip_special_tokens=False) for d, w in zip(decoded, want))
    print(f"{name}: {len(corpus)} texts ({sum(map(len, want))} tokens): ids identical {same_ids}/{len(corpus)}, "
          f"exact round trip {exact}/{len(corpus)}, decode == HF decode {same_decode}/{len(corpus)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            print(f"  first id mismatch at text {i}: {corpus[i][:80]!r}")
            break
    failed |= same_ids != len(corpus) or exact != len(corpus) or same_decode != len(corpus)
sys.exit(1 if failed else 0)
