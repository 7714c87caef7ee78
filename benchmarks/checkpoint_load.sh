#!/usr/bin/env bash
# Issue B benchmark: CausalLM::load of a ~1 GB checkpoint against a plain sequential read of the same files into
# memory, alternated in fresh processes (warm page cache for all), median of 5. Goal: load speed >= 80% of read
# speed. Also shown: the streaming read through one reused 8 MB buffer, a ceiling no loader can reach since the
# bytes never land in fresh memory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/env.sh"
bin="$root/${BUILD_DIR:-build}/bin/bench_checkpoint_load"
dir="${BENCH_DIR:-$root/build/bench}/ckpt-1gb"
[ -f "$dir/config.json" ] || "$bin" gen "$dir" "${GB:-1}"
"$bin" read "$dir" >/dev/null  # warm the page cache
for i in 1 2 3 4 5; do "$bin" stream "$dir"; "$bin" read "$dir"; "$bin" load "$dir"; done > "$dir.results.jsonl"
"$INTROSPECT_VENV/bin/python" - "$dir.results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda m, k: statistics.median(r[k] for r in rows if r["mode"] == m)
size_mb = rows[0]["bytes"] / 1e6
print(f"checkpoint {size_mb:.0f} MB")
print(f"streaming read (8 MB buffer): {med('stream','seconds'):.3f} s ({med('stream','gb_per_s'):.2f} GB/s)")
print(f"sequential read into memory:  {med('read','seconds'):.3f} s ({med('read','gb_per_s'):.2f} GB/s), peak RSS {med('read','peak_rss_mb'):.0f} MB")
print(f"CausalLM::load:               {med('load','seconds'):.3f} s ({med('load','gb_per_s'):.2f} GB/s), peak RSS {med('load','peak_rss_mb'):.0f} MB")
print(f"load speed / read-into-memory speed = {med('read','seconds') / med('load','seconds'):.2f} (goal >= 0.80)")
print(f"load speed / streaming read speed   = {med('stream','seconds') / med('load','seconds'):.2f}")
print(f"load peak RSS / checkpoint size = {med('load','peak_rss_mb') / size_mb:.2f}")
PY
