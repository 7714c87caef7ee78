#!/usr/bin/env bash
# Sets up, builds, and runs the whole suite through ctest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
build_dir="${BUILD_DIR:-build}"
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
cd "$build_dir"
ctest --output-on-failure -j "${TEST_JOBS:-2}" "$@"
