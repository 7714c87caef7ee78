"""Issue C benchmark: single-thread encode throughput, introspect vs HF tokenizers (Rust), side by side on the
MATH500 and GSM8K text (every problem and solution), Qwen3 and Llama-3. Both sides warm their BPE caches with
one pass, then encode the corpus PASSES times. Goal: ratio >= 1.
Usage: tokenizer_encode.py BUILD_DIR SHARED_DATA_DIR [PASSES]"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"  # one thread for the Rust side too (set before importing tokenizers)
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer

build, data = Path(sys.argv[1]), Path(sys.argv[2])
passes = int(sys.argv[3]) if len(sys.argv) > 3 else 5
texts = []
for line in (data / "math/math500/test.jsonl").read_text().splitlines():
    r = json.loads(line); texts += [r["problem"], r["solution"]]
for line in (data / "math/gsm8k/test.jsonl").read_text().splitlines():
    r = json.loads(line); texts += [r["question"], r["answer"]]
corpus = Path(tempfile.mkdtemp()) / "corpus.json"
corpus.write_text(json.dumps(texts))
print(f"corpus: {len(texts)} texts, {sum(len(t.encode()) for t in texts)} bytes, {passes} timed passes")
for name in ["qwen3", "llama3"]:
    path = data / "tokenizers" / name / "tokenizer.json"
    hf = Tokenizer.from_file(str(path))
    hf.encode_batch(texts, add_special_tokens=False)  # warm
    t0 = time.perf_counter()
    n = 0
    for _ in range(passes):
        n += sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
    hf_rate = n / (time.perf_counter() - t0)
    out = subprocess.run([str(build / "bin/bench_tokenizer_encode"), str(path), str(corpus), str(passes)],
                         capture_output=True, text=True, check=True).stdout
    ours = json.loads(out)
    print(f"{name}: introspect {ours['tokens_per_s'] / 1e6:.2f} M tok/s, HF tokenizers {hf_rate / 1e6:.2f} M tok/s, "
          f"ratio {ours['tokens_per_s'] / hf_rate:.2f}x (goal >= 1)")
