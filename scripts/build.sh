#!/usr/bin/env bash
# Configures and builds into ${BUILD_DIR:-build}; the binary lands at ${BUILD_DIR:-build}/bin/introspect.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/env.sh"
build_dir="${BUILD_DIR:-build}"
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
    -DINTROSPECT_VENV="$INTROSPECT_VENV" ${CMAKE_ARGS:-}
fi
# Two cores, ~1.5 GB per LibTorch-heavy file: the default -j of ninja is fine here.
cmake --build "$build_dir" ${BUILD_JOBS:+-j "$BUILD_JOBS"}
