#!/usr/bin/env bash
# Idempotent set-up on a fresh machine (python3 present, nothing else):
#   scripts/setup.sh run   Debian data packages, .venv, torch, the project
#   scripts/setup.sh test  the same, plus what the tests use (chromium, test extras)
# A second run with nothing changed returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-run}"
apt_packages=(dataset-fashion-mnist)
extras="bench"
if [ "$purpose" = "test" ]; then
  apt_packages+=(chromium)
  extras="test,bench"
fi

# 1. Debian packages (offline data; chromium for the browser tests).
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "setup: installing Debian packages: ${missing[*]}"
  "${as_root[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. The virtual environment and the project, reinstalled only when the inputs change.
venv=.venv
stamp="$venv/.ams-installed-$purpose"
want="$(cat pyproject.toml client/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
for done_stamp in "$stamp" "$venv/.ams-installed-test"; do  # a test set-up covers run's
  if [ -f "$done_stamp" ] && [ "$(cat "$done_stamp")" = "$want" ]; then
    exit 0
  fi
done
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing a CUDA build of torch"
    "${pip[@]}" install "torch>=2.3,<3"
  else
    # The CPU wheel; an unpinned torch would pull a CUDA build of several GB.
    echo "setup: no GPU, installing the CPU build torch==2.13.0"
    "${pip[@]}" install "torch==2.13.0"
  fi
fi
echo "setup: installing the project ($extras) and its client (client/: ams_client, the ams command)"
"${pip[@]}" install -e ".[$extras]" -e ./client
echo "$want" > "$stamp"
