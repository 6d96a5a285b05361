#!/usr/bin/env bash
# How the GPU numbers in docs/benchmarks/kernels-<gpu>.json are produced on the lent device machine.
# Usage (from the repo root): bash tests/kernels/gpu_session.sh {tests|bench ARGS...}
# Makes `calibstudio` importable without an install (shim over the package-dir mapping).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
shim=/tmp/cs-shim/calibstudio
if [ ! -d "$shim" ]; then
  mkdir -p "$shim" && cp packaging/calibstudio/*.py "$shim"/
  for d in app engine kernels resources; do ln -sfn "$PWD/$d" "$shim/$d"; done
fi
export PYTHONPATH=/tmp/cs-shim${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
cmd=$1; shift
case $cmd in
  tests) python3 -m pytest tests/kernels -q -x -p no:cacheprovider -rs "$@" 2>&1 | tee "$OUT/gpu-tests.log" ;;
  bench) python3 -m calibstudio.kernels.bench "$@" 2>&1 | tee -a "$OUT/bench.log" ;;
esac
