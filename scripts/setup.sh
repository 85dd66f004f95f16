#!/usr/bin/env bash
# Idempotent set-up on a fresh machine (python3 present, nothing else):
#   scripts/setup.sh run    Debian data packages, .venv, torch, the project (what serving needs)
#   scripts/setup.sh bench  the same, plus the benchmarks' extras (faiss-cpu, matplotlib, h11)
#   scripts/setup.sh distributed  run's, plus Ray (the Ray mode: make run-cluster)
#   scripts/setup.sh test   the same, plus what the tests use (chromium, podman, test, bench and
#                           distributed extras)
# A second run with nothing changed returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-run}"
apt_packages=(dataset-fashion-mnist)
case "$purpose" in
  run) extras="" ; covered_by=(run bench distributed test) ;;
  bench) extras="[bench]" ; covered_by=(bench test) ;;
  distributed) extras="[distributed]" ; covered_by=(distributed test) ;;
  # podman, runc, debootstrap: the container check builds and runs the image for real.
  test) extras="[test,bench,distributed]" ; covered_by=(test) ; apt_packages+=(chromium podman runc debootstrap) ;;
  *) echo "setup: unknown purpose '$purpose' (run, bench, distributed or test)" >&2; exit 2 ;;
esac

# 1. Debian packages (offline data; chromium for the browser tests; podman for the container
#    check; venv support for python3).
apt_missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || apt_missing+=("$pkg")
done
if [ ! -x .venv/bin/python ] && ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  apt_missing+=(python3-venv)  # Debian ships venv's pip bootstrap separately
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
    if ! command -v sudo >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
      echo "setup: needs these Debian packages; as root run: apt-get install ${apt_missing[*]}" >&2
      exit 1
    fi
  fi
  echo "setup: installing Debian packages: ${apt_missing[*]}"
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

# 2. The virtual environment and the project, reinstalled only when the inputs change.
venv=.venv
want="$(cat pyproject.toml client/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
for done_purpose in "${covered_by[@]}"; do  # a test set-up covers bench's and run's
  done_stamp="$venv/.ams-installed-$done_purpose"
  if [ -f "$done_stamp" ] && [ "$(cat "$done_stamp")" = "$want" ]; then
    exit 0
  fi
done
if [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"  # a half-made one (python3 -m venv failed before)
  python3 -m venv "$venv"
fi
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
echo "setup: installing the project${extras:+ $extras} and its client (client/: ams_client, the ams command)"
"${pip[@]}" install -e ".$extras" -e ./client
echo "$want" > "$venv/.ams-installed-$purpose"
