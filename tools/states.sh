#!/usr/bin/env bash
# Optimizer-state quality and memory (docs/results.md, "Optimizer states"):
# the tiny model trained from scratch for 600 steps with fp32, int8 and fp8
# AdamW moments, the W4A4 QAT fine-tune (configs/llama-w4a4.yaml, from the
# `make run` checkpoint) with each, and the peak RSS of a few training steps
# of the small config with each. Writes runs/results/states.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
OUT=runs/results
mkdir -p "$OUT"
[ -f runs/tiny/latest ] || { echo "run make run first (runs/tiny)"; exit 2; }
# the small config's data: an 8192-token vocabulary
[ -f runs/data/sotu-8k/manifest.json ] || $Q data prepare --input ../shared/data/sotu --out runs/data/sotu-8k --vocab 8192 >/dev/null
{
for s in fp32 int8 fp8; do
  dir=runs/states-$s
  [ -f $dir/latest ] || $Q train --config configs/tiny.yaml --set train.steps=600 --set out_dir=$dir --set optimizer.state=$s \
    --set train.eval_every=0 >"$OUT/train-states-$s.log" 2>&1
  echo "== scratch $s $(grep -o 'optimizer state ([a-z0-9]*) [0-9.]* MB, [0-9.]* bytes per parameter' "$OUT/train-states-$s.log" | head -1)"
  $Q eval --model $dir --data runs/data/sotu
  dir=runs/states-w4a4-$s
  [ -f $dir/latest ] || $Q train --config configs/llama-w4a4.yaml --set out_dir=$dir --set optimizer.state=$s \
    --set train.eval_every=0 >"$OUT/train-states-w4a4-$s.log" 2>&1
  echo "== w4a4 $s"
  $Q eval --model $dir --data runs/data/sotu
  rm -rf /tmp/qat-rss-$s
  /usr/bin/time -f "peak RSS %M KB" $Q train --config configs/small.yaml --set train.steps=3 --set train.ckpt_every=0 \
    --set out_dir=/tmp/qat-rss-$s --set optimizer.state=$s 2>&1 | grep -E "peak RSS|optimizer state|qat:" | sed "s/^/rss $s: /" || true
  rm -rf /tmp/qat-rss-$s
done
} >"$OUT/states.txt" 2>&1
cat "$OUT/states.txt"
