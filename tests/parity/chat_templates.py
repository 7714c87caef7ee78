"""Chat templates: identical strings and ids to transformers' apply_chat_template, using the shared
tokenizer_config.json files, for Qwen3 and Llama-3 over a set of conversations.
Usage: chat_templates.py PATH/TO/chat_render SHARED_DATA_DIR"""
import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

TOOL, DATA = sys.argv[1], Path(sys.argv[2])
S = {"role": "system", "content": "You are a careful mathematician."}
U1 = {"role": "user", "content": "What is 2+2? Put the answer in \\boxed{}."}
A1 = {"role": "assistant", "content": "<think>\nTwo plus two.\n</think>\n\nThe answer is \\boxed{4}."}
U2 = {"role": "user", "content": "  And 3·3 = ?  Explain in 日本語.\n"}
A2_REASONING = {"role": "assistant", "content": "It is 9.", "reasoning_content": "\nthree threes\n"}
CASES = [
    dict(messages=[U1], add_generation_prompt=True),
    dict(messages=[S, U1], add_generation_prompt=True),
    dict(messages=[S, U1], add_generation_prompt=False),
    dict(messages=[S, U1], add_generation_prompt=True, enable_thinking=False),
    dict(messages=[S, U1, A1, U2], add_generation_prompt=True),  # past reasoning is dropped
    dict(messages=[U1, A1], add_generation_prompt=False),  # reasoning after the last query is kept
    dict(messages=[S, U1, A1, U2, A2_REASONING], add_generation_prompt=False),
    dict(messages=[U1, {"role": "assistant", "content": "No think block here."}, U2], add_generation_prompt=True,
         enable_thinking=False),
    dict(messages=[{"role": "user", "content": "\n\n  padded  \n"}], add_generation_prompt=True),
]

failed = False
for name in ["qwen3", "llama3"]:
    folder = DATA / "tokenizers" / name
    hf = AutoTokenizer.from_pretrained(str(folder))
    proc = subprocess.run([TOOL, str(folder)], input="\n".join(json.dumps(c) for c in CASES) + "\n",
                          capture_output=True, text=True, check=True)
    ours = [json.loads(l) for l in proc.stdout.splitlines()]
    same_text = same_ids = 0
    for case, got in zip(CASES, ours):
        kwargs = dict(add_generation_prompt=case["add_generation_prompt"])
        if "enable_thinking" in case:
            kwargs["enable_thinking"] = case["enable_thinking"]
        text = hf.apply_chat_template(case["messages"], tokenize=False, **kwargs)
        ids = hf.apply_chat_template(case["messages"], tokenize=True, return_dict=False, **kwargs)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        same_text += got["text"] == text
        same_ids += got["ids"] == list(ids)
        if got["text"] != text:
            print(f"  {name} text differs:\n    ours {got['text']!r}\n    hf   {text!r}")
    print(f"{name}: {len(CASES)} conversations: identical strings {same_text}/{len(CASES)}, "
          f"identical ids {same_ids}/{len(CASES)}")
    failed |= same_text != len(CASES) or same_ids != len(CASES)
sys.exit(1 if failed else 0)
