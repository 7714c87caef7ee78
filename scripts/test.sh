#!/usr/bin/env bash
# Sets up, builds, and runs the whole suite through ctest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
build_dir="${BUILD_DIR:-build}"
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
cd "$build_dir"
# Tests run side by side, each with its own thread pool, so there are more threads than cores. OpenMP threads
# that spin while they wait then steal the cores the other test needs: two demo trainings run side by side took
# 93 s each with spinning and 39 s with passive waits (21 s alone).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ctest --output-on-failure -j "${TEST_JOBS:-2}" "$@"
