#!/usr/bin/env bash
# The container, built and run for real with podman: `make container-check` runs this.
#   scripts/container_check.sh [--results FILE] [--keep]
# Makes the local base image when missing (scripts/container_base.sh), then builds the CPU
# image and drives it (scripts/container_check.py says how); writes results/container.json.
# Needs root, podman, runc and debootstrap (scripts/setup.sh test installs them) and the
# project's virtual environment (PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "container_check: missing ${missing[*]} (apt-get install podman runc debootstrap)" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "container_check: needs root (rootful podman with runc)" >&2
  exit 2
fi

start=$SECONDS
existed=1
podman image exists "$(scripts/container_base.sh --name)" || existed=0
base="$(scripts/container_base.sh)"
made=()
[ "$existed" -eq 1 ] || made=(--base-made-s "$((SECONDS - start))")
exec "${PYTHON:-.venv/bin/python}" scripts/container_check.py --base "$base" "${made[@]}" "$@"
