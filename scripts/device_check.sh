#!/usr/bin/env bash
# The GPU checks, prepared to run once on a lent GPU machine (no network there; its
# python3 has torch, numpy, scikit-image, pytest, ... but not the service's packages).
#
#   scripts/device_check.sh prepare   here, with network: fills .device/ (ignored by git)
#                                     with the wheels the GPU image lacks and Fashion-MNIST
#   scripts/device_check.sh run       there (device tool: carry [".device"]): installs the
#                                     wheels into /tmp/site, then, each step under its own
#                                     time limit, writes into $OUT (or results/device/):
#     env.txt                      GPU, driver, torch
#     accelerator.log / .xml       tests/numerics/test_accelerator.py on CUDA (CUDA against CPU,
#                                  the issue's recall figures on the GPU, the service)
#     bench_pc_cuda.json / .log    scripts/bench_pc.py --device cuda, batches 64 .. 1024
#     pc_experiments_full_cuda.jsonl / .log
#                                  scripts/pc_experiments.py --full on CUDA: partial cues
#                                  first, then as much of the noisy grid as time allows
#                                  (rows are appended as they finish; rerun to resume)
#
# The limits add up to 540 s, inside one 600 s call. AMS_CHECK_DEVICE=cpu and
# AMS_CHECK_SCALE=0.2 rehearse the plumbing here (PYTHON=.venv/bin/python, no install).
set -uo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
cache=.device
# What the service's imports need beyond the image's packages (its list: KINDS.md of the
# device tool), dependencies included; typing-extensions because pydantic needs a newer one.
# A rehearsal in a venv of only the image's packages found fastapi's opentelemetry-api.
wheels=(fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types
        typing-inspection python-multipart opentelemetry-api typing_extensions)

case "$mode" in
prepare)
  set -e
  mkdir -p "$cache/wheels" "$cache/fashion-mnist"
  rm -f "$cache"/wheels/*.whl
  venv_py=.venv/bin/python
  # The versions CI tests with (this machine's .venv), for the GPU image's Python 3.12.
  pins=()
  for name in "${wheels[@]}"; do
    pins+=("$name==$("$venv_py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$cache/wheels" "${pins[@]}"
  cp /usr/share/datasets/fashion-mnist/*.gz "$cache/fashion-mnist/"
  du -sh "$cache"
  echo "prepared: run it there with  carry: [\"$cache\"]  command: bash scripts/device_check.sh run"
  ;;
run)
  out="${OUT:-results/device}"
  mkdir -p "$out"
  py="${PYTHON:-python3}"
  device="${AMS_CHECK_DEVICE:-cuda}"
  scale="${AMS_CHECK_SCALE:-1}"
  limit() { "$py" -c "import sys; print(max(10, int(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$scale"; }
  if [ -z "${PYTHON:-}" ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$cache"/wheels/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export AMS_FASHION_MNIST_DIR="$PWD/$cache/fashion-mnist" PYTHONUNBUFFERED=1 AMS_TEST_ACCEL="$device"
  [ -d "$AMS_FASHION_MNIST_DIR" ] || export AMS_FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  } >"$out/env.txt" 2>&1
  cat "$out/env.txt"
  step() {  # step NAME SECONDS COMMAND...: run under a time limit, say how it ended
    local name="$1" secs="$2"; shift 2
    local t0=$SECONDS
    timeout --kill-after=5 "$secs" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $secs s)$([ $rc -eq 124 ] && echo ', cut at the limit')"
    tail -n 25 "$out/$name.log"
  }
  step accelerator "$(limit 200)" "$py" -m pytest -q -p no:cacheprovider tests/numerics/test_accelerator.py \
    --junitxml="$out/accelerator.xml" -o addopts="-ra"
  step bench_pc_cuda "$(limit 90)" "$py" scripts/bench_pc.py --device "$device" --batches 64 256 1024 \
    --out "$out/bench_pc_cuda.json"
  step pc_partial "$(limit 60)" "$py" scripts/pc_experiments.py --full --device "$device" --only partial \
    --out "$out/pc_experiments_full_cuda.jsonl"
  step pc_noisy "$(limit 190)" "$py" scripts/pc_experiments.py --full --device "$device" --only noisy \
    --out "$out/pc_experiments_full_cuda.jsonl"
  cat "$out/pc_partial.log" >>"$out/pc_noisy.log" && rm "$out/pc_partial.log"  # at most 8 files come back
  ls -la "$out"
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
