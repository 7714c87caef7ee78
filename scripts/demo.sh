#!/usr/bin/env bash
# Sets up, builds, then runs the main job on its embedded default.
# Until the trainer lands, the most useful real thing is resolving and validating the shipped configs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin="$root/${BUILD_DIR:-build}/bin/introspect"
"$bin" --version
for f in "$root"/configs/*.yaml; do
  echo "== introspect config check ${f#$root/}"
  "$bin" config check "$f" "$@"
done
