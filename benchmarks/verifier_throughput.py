"""Math verifier throughput: verdicts per second of `introspect verify --extract` and of PyPI math-verify
(parse + verify), side by side on the same (gold, response) pairs: the MATH500 set of
tests/parity/math_verify_agreement.py (answers as given, rewritten and wrong, in model-style responses), repeated
PASSES times. Both run one verdict at a time on one core. introspect's time is the whole command, process start
included (also shown without it, from a run on an empty file). Also reports how often the verdicts agree.
Usage: verifier_throughput.py PATH/TO/introspect SHARED_DATA_DIR [PASSES]
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "parity"))
from math_verify_agreement import build_pairs  # noqa: E402

from math_verify import parse, verify  # noqa: E402

binary, data_dir = sys.argv[1], sys.argv[2]
passes = int(sys.argv[3]) if len(sys.argv) > 3 else 3

pairs = build_pairs(data_dir) * passes
tmp = Path(tempfile.mkdtemp())
cases = tmp / "pairs.jsonl"
cases.write_text("".join(json.dumps({"gold": g, "pred": r}) + "\n" for g, r, _ in pairs))
(tmp / "empty.jsonl").write_text("")
print(f"{len(pairs)} verdicts ({len(pairs) // passes} pairs x {passes} passes)")


def run_introspect(path):
    t0 = time.perf_counter()
    out = subprocess.run([binary, "verify", "--extract", "--cases", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return time.perf_counter() - t0, [json.loads(l)["equal"] for l in out.splitlines()]


run_introspect(tmp / "empty.jsonl")  # warm the page cache
start_s = min(run_introspect(tmp / "empty.jsonl")[0] for _ in range(3))
ours_s, ours = run_introspect(cases)

t0 = time.perf_counter()
theirs = [bool(verify(parse(f"${g}$"), parse(r))) for g, r, _ in pairs]
theirs_s = time.perf_counter() - t0

n = len(pairs)
agree = sum(a == b for a, b in zip(ours, theirs))
ours_rate, theirs_rate = n / ours_s, n / theirs_s
print(f"introspect verify: {ours_rate:,.0f} verdicts/s ({ours_s:.2f} s; {n / max(ours_s - start_s, 1e-9):,.0f}/s "
      f"without its {start_s:.2f} s process start)")
print(f"math-verify:       {theirs_rate:,.0f} verdicts/s ({theirs_s:.2f} s)")
print(f"ratio introspect / math-verify: {ours_rate / theirs_rate:.1f}x; verdicts agree on {agree}/{n}")
