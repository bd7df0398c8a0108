#!/usr/bin/env bash
# The two training engines side by side (docs/gorgonia.md): the Go
# benchmark (one step of 8 x 128 tokens of the tiny config on one thread:
# ms/step, tokens/s, allocations and bytes per step, live heap) for the
# tape, the Gorgonia graph and the Gorgonia graph with composed attention
# and SwiGLU, then the peak RSS and the mean step time of 30 steps of
# `qat train` (configs/llama-w4a8.yaml, one thread, no evaluation) on each
# engine. Writes runs/results/engines.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
OUT=runs/results
mkdir -p "$OUT"
[ -f runs/tiny/latest ] || { echo "run make run first (runs/tiny)"; exit 2; }
{
  go test ./engine/gorgonia -run XX -bench Engines -benchtime 10x | grep Benchmark
  for engine in tape gorgonia; do
    rm -rf /tmp/qat-engine-$engine
    /usr/bin/time -f "peak RSS %M KB" $Q train --config configs/llama-w4a8.yaml --engine $engine \
      --set train.steps=30 --set train.threads=1 --set train.eval_every=0 --set train.ckpt_every=0 \
      --set train.no_final_eval=true --set train.log_every=30 --set out_dir=/tmp/qat-engine-$engine 2>&1 |
      tr '\r' '\n' | grep -E "peak RSS|step 30/30" | sed "s/^/$engine: /"
  done
} 2>&1 | tee "$OUT/engines.txt"
