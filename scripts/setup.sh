#!/usr/bin/env bash
# Installs everything introspect needs on a fresh Debian machine. Idempotent: a second run only checks.
# Downloads are cached under ${INTROSPECT_CACHE:-~/.cache/introspect} so a fresh clone reuses them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/env.sh
source "$here/env.sh"

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config
  libsentencepiece-dev nlohmann-json3-dev libspdlog-dev libcli11-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenmpi-dev openmpi-bin libpcre2-dev libutf8proc-dev libginac-dev clang
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  mkdir -p "$INTROSPECT_CACHE/apt/partial"
  $sudo apt-get update -qq -o APT::Sandbox::User=root
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends -o APT::Sandbox::User=root \
    -o Dir::Cache::Archives="$INTROSPECT_CACHE/apt" "${missing[@]}" >/dev/null
fi

# One virtualenv holds the torch wheel (the source of LibTorch) and the Python test peers.
# The stamp records the requirements it was built from, so an unchanged venv is not re-checked by pip.
req="$here/requirements.txt"
stamp="$INTROSPECT_VENV/.introspect-requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  echo "[setup] preparing the Python venv at $INTROSPECT_VENV"
  # pyenv's python3 comes first on PATH; any Python >= 3.10 with venv works.
  [ -x "$INTROSPECT_VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$INTROSPECT_VENV"
  export PIP_CACHE_DIR="$INTROSPECT_CACHE/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
  "$INTROSPECT_VENV/bin/python" -m pip install -q -r "$req"
  cp "$req" "$stamp"
fi
echo "[setup] ok: torch $("$INTROSPECT_VENV/bin/python" -c 'import torch; print(torch.__version__)') in $INTROSPECT_VENV"
