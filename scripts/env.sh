# Sourced by the other scripts: where the caches and the venv live.
export INTROSPECT_CACHE="${INTROSPECT_CACHE:-$HOME/.cache/introspect}"
export INTROSPECT_VENV="${INTROSPECT_VENV:-$INTROSPECT_CACHE/venv}"
export CCACHE_DIR="${CCACHE_DIR:-$INTROSPECT_CACHE/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# ccache hits across clones in different folders.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export CCACHE_NOHASHDIR=1
