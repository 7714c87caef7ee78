#!/usr/bin/env bash
# Sets up, builds, then runs the main job on its embedded default. Until the trainer lands, that is the most
# useful real thing the engine does: sampling from a real trained model (stories260K, a small Llama, from
# ../shared) through the rollout engine, with the per-token log-probs the trainer will use.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin="$root/${BUILD_DIR:-build}/bin/introspect"
model="$root/../shared/data/models/stories260K"
"$bin" --version
"$bin" config check "$root/configs/base.yaml" >/dev/null && echo "configs/base.yaml: valid"
if [ ! -d "$model" ]; then
  echo "stories260K not found at $model (the shared data folder sits beside the checkout)" >&2
  exit 1
fi
work=$(mktemp -d)
printf '%s\n' '{"prompt": "Once upon a time"}' '{"prompt": "Tom had a red ball"}' > "$work/prompts.jsonl"
"$bin" generate --model "$model" --prompts "$work/prompts.jsonl" --out "$work/samples.jsonl" --template plain \
  --n 3 --temperature 0.8 --top-p 0.95 --max-new-tokens 120 --seed 1 "$@"
source "$root/scripts/env.sh"
"$INTROSPECT_VENV/bin/python" - "$work/samples.jsonl" 2>/dev/null <<'PY' || cat "$work/samples.jsonl"
import json, sys
for line in open(sys.argv[1]):
    s = json.loads(line)
    lp = sum(s["logprobs"]) / max(1, len(s["logprobs"]))
    print(f"\n[prompt {s['prompt_index']} sample {s['sample_index']}] {len(s['ids'])} tokens, "
          f"mean log-prob {lp:.3f}, finish {s['finish_reason']}\n{s['text']}")
PY
echo; echo "samples: $work/samples.jsonl"
