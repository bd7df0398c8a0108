#!/usr/bin/env bash
# Reproduces the LR-QAT section of docs/results.md: FP32, RTN, full QAT
# (LSQ), LoRA-QAT and LR-QAT at W4 per channel and W4 g64 (the tiny
# model's ffn width, 704, is no multiple of 128) on the tiny
# model (same steps, batches and data, all from runs/tiny), whole
# held-out split; then peak memory of LR-QAT against full QAT on the base
# and small configs. Needs runs/tiny (make run) and runs/data/sotu-8k
# (tools/results.sh's small runs, or qat data prepare --vocab 8192).
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
DATA=runs/data/sotu
OUT=runs/lrqat
mkdir -p "$OUT"
[ -f runs/tiny/latest ] || { echo "run make run first (runs/tiny)"; exit 2; }
# $1: channel or g64; writes the three configs and the RTN rules
variant() {
  local g=$1 spec='granularity: channel'
  [ "$g" = g64 ] && spec='granularity: group, group_size: 64'
  for c in qat loraqat lrqat; do
    sed -e "s/granularity: channel/$spec/" -e "s#out_dir: runs/tiny-w4-$c#out_dir: $OUT/w4-$g-$c#" configs/llama-w4-$c.yaml >"$OUT/w4-$g-$c.yaml"
  done
  local js='"granularity": "channel"'
  [ "$g" = g64 ] && js='"granularity": "group", "group_size": 64'
  echo "[{\"match\": \"model.layers.*\", \"weights\": {\"format\": \"int\", \"bits\": 4, \"symmetric\": true, $js, \"scale\": \"minmax\"}}]" >"$OUT/rtn-$g.json"
}
rss() { grep "Maximum resident" "$1" | awk '{printf "%.0f", $6/1024}'; }
{
  echo "== fp32"; $Q eval --model runs/tiny --data $DATA
  # the same 300 steps in full precision (tools/results.sh trains it)
  [ -f runs/tiny-fp-control/latest ] && { echo "== control"; $Q eval --model runs/tiny-fp-control --data $DATA; }
  for g in channel g64; do
    variant $g
    rm -rf "$OUT/rtn-$g"
    $Q ptq --method rtn --rules "$OUT/rtn-$g.json" --model runs/tiny --out "$OUT/rtn-$g" >/dev/null
    echo "== rtn $g"; $Q eval --model "$OUT/rtn-$g" --data $DATA
    for c in qat loraqat lrqat; do
      d="$OUT/w4-$g-$c"
      [ -f "$d/latest" ] || /usr/bin/time -v $Q train --config "$OUT/w4-$g-$c.yaml" >"$OUT/train-$g-$c.log" 2>&1
      echo "== $c $g (train: $(grep -h 'tokens/s' "$OUT/train-$g-$c.log" | tail -1 | grep -o '[0-9]* tokens/s'), peak RSS $(rss "$OUT/train-$g-$c.log") MiB)"
      grep -h "^parameters:" "$OUT/train-$g-$c.log" || true
      $Q eval --model "$d" --data $DATA
    done
  done
} 2>&1 | tee "$OUT/eval.txt"
# memory: 10 steps from a random start, full QAT (LSQ) vs LR-QAT, W4 per channel
mem() { # config name, batch, lora?
  local cfg=$1 b=$2 m=$3 f="$OUT/mem-$1-$3.yaml"
  { sed -e 's/^  steps: .*/  steps: 10/' -e "s/^  batch: .*/  batch: $b/" -e 's/^  eval_every: .*/  eval_every: 1000\n  no_final_eval: true/' -e 's/^  eval_batches: .*/  eval_batches: 1/' \
      -e 's/^  ckpt_every: .*/  ckpt_every: 1000/' -e "s#^out_dir: .*#out_dir: $OUT/mem-$1-$3#" configs/$cfg.yaml
    echo "quant:"; echo "  rules:"; echo "    - match: \"model.layers.*\""
    if [ "$m" = qat ]; then echo "      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: lsq}"
    else echo "      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: minmax}"
      printf 'lora:\n  method: lr-qat\n  rank: 32\n  alpha: 32\n'; fi
  } >"$f"
  rm -rf "$OUT/mem-$1-$3"
  /usr/bin/time -v $Q train --config "$f" >"$OUT/mem-$1-$3.log" 2>&1
  echo "$cfg batch $b $m: peak RSS $(rss "$OUT/mem-$1-$3.log") MiB, $(grep -h 'tokens/s' "$OUT/mem-$1-$3.log" | tail -1 | grep -o '[0-9]* tokens/s'); $(grep -h '^parameters:' "$OUT/mem-$1-$3.log")"
}
{
  mem base 1 qat; mem base 1 lrqat
  mem small 8 qat; mem small 8 lrqat
} 2>&1 | tee "$OUT/memory.txt"
# step time, nothing else running: 40 steps of each W4 per-channel method
for c in qat lrqat loraqat; do
  rm -rf "$OUT/speed-$c"
  $Q train --config "$OUT/w4-channel-$c.yaml" --set train.steps=40 --set train.eval_every=0 --set train.no_final_eval=true \
    --set train.eval_batches=1 --set train.log_every=10 --set out_dir="$OUT/speed-$c" 2>&1 | grep "step 40/40" | sed "s/^/$c: /"
done | tee "$OUT/speed.txt"
