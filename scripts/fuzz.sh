#!/usr/bin/env bash
# Builds a libFuzzer target with clang, AddressSanitizer and UndefinedBehaviorSanitizer, then runs it.
# Usage: scripts/fuzz.sh TARGET [SECONDS]   (targets: safetensors, tokenizer)
# The tokenizer target fuzzes $INTROSPECT_FUZZ_TOKENIZER (default: the shared Qwen3 tokenizer.json).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/env.sh"
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-600}
out="${FUZZ_DIR:-$root/build/fuzz}"
mkdir -p "$out"
case "$target" in
  safetensors) sources=(src/io/safetensors.cpp tests/fuzz/safetensors_header_fuzz.cpp); libs=() ;;
  tokenizer)
    sources=(src/tokenizer/hf_bpe.cpp src/tokenizer/sentencepiece.cpp src/tokenizer/tokenizer.cpp tests/fuzz/tokenizer_fuzz.cpp)
    libs=(-lpcre2-8 -lutf8proc -lsentencepiece)
    export INTROSPECT_FUZZ_TOKENIZER="${INTROSPECT_FUZZ_TOKENIZER:-$root/../shared/data/tokenizers/qwen3/tokenizer.json}" ;;
  *) echo "unknown fuzz target '$target'" >&2; exit 2 ;;
esac
cd "$root"
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude "${sources[@]}" "${libs[@]}" -o "$out/$target"
corpus="$out/$target-corpus"
if [ "$target" = tokenizer ] && [ ! -d "$corpus" ]; then
  mkdir -p "$corpus"
  # Seeds: the llama.cpp tokenizer test inputs (whitespace runs, emoji, CJK, Khmer, contractions).
  "$INTROSPECT_VENV/bin/python" - "$corpus" "$root/../shared/data/tokenizers/llamacpp-vocab-tests/ggml-vocab-qwen2.gguf.inp" <<'PY'
import sys
for i, text in enumerate(open(sys.argv[2], encoding="utf-8").read().split("\n__ggml_vocab_test__\n")):
    open(f"{sys.argv[1]}/seed{i}", "w", encoding="utf-8").write(text)
PY
elif [ ! -d "$corpus" ]; then
  mkdir -p "$corpus"
  # Seeds written by the reference implementation (the safetensors package), not by us.
  "$INTROSPECT_VENV/bin/python" - "$corpus" <<'PY'
import sys, torch
from safetensors.torch import save_file
d = sys.argv[1]
save_file({"w": torch.ones(2, 3)}, f"{d}/f32.safetensors")
save_file({"a": torch.zeros(4, dtype=torch.bfloat16), "b": torch.arange(3, dtype=torch.int64)},
          f"{d}/mixed.safetensors", metadata={"format": "pt"})
save_file({"e": torch.zeros(0), "h": torch.ones(1, 1, dtype=torch.float16)}, f"{d}/edge.safetensors")
PY
fi
"$out/$target" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -n 25
