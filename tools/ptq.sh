#!/usr/bin/env bash
# Post-training methods on the tiny model (runs/tiny from `make run`) and
# the held-out SOTU addresses: RTN, GPTQ, QQQ and GWQ at W4A16 g64, W4A8
# (QQQ's grid) and W3A16 g64, whole held-out split, KL divergence from the
# FP32 model. (The issue asks for the small model trained long enough;
# this is the tiny one, 1800 steps: see docs/results.md.) g64 rather than
# g128: the tiny model's ffn width, 704, is no multiple of 128.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
DATA=runs/data/sotu
OUT=runs/ptq
mkdir -p "$OUT"
[ -f runs/tiny/latest ] || { echo "run make run first (runs/tiny)"; exit 2; }
echo '[{"match": "model.layers.*", "weights": {"format": "int", "bits": 4, "symmetric": true, "granularity": "group", "group_size": 64, "scale": "minmax"}}]' >"$OUT/w4a16-g64.json"
echo '[{"match": "model.layers.*", "weights": {"format": "int", "bits": 3, "symmetric": true, "granularity": "group", "group_size": 64, "scale": "minmax"}}]' >"$OUT/w3a16-g64.json"
{
  echo "== fp32"; $Q eval --model runs/tiny --data $DATA
  for grid in w4a16-g64 w4a8-qqq w3a16-g64; do
    for m in rtn gptq qqq gwq gwq+gptq; do
      [ "$m" = qqq ] && [ "$grid" != w4a8-qqq ] && continue
      what=(--rules "$OUT/$grid.json"); [ "$grid" = w4a8-qqq ] && what=(--preset w4a8-qqq)
      method=(--method "${m%%+*}"); [ "$m" = gwq+gptq ] && method=(--method gwq --gwq-base gptq)
      [ -f "$OUT/$grid-$m/model.safetensors" ] ||
      /usr/bin/time -v $Q ptq "${method[@]}" "${what[@]}" --model runs/tiny --out "$OUT/$grid-$m" --data $DATA \
        --calib-batches 16 >"$OUT/ptq-$grid-$m.log" 2>&1
      echo "== $m $grid (peak RSS $(grep 'Maximum resident' "$OUT/ptq-$grid-$m.log" | awk '{printf "%.0f", $6/1024}') MiB)"
      $Q eval --model "$OUT/$grid-$m" --data $DATA --kl-divergence runs/tiny
    done
  done
} 2>&1 | tee "$OUT/eval.txt"
# QAT (300 steps from runs/tiny, configs/llama-w4a8.yaml at QQQ's grid)
# from round-to-nearest and from each post-training start
{
  for init in rtn gptq qqq; do
    d="$OUT/qat-w4a8-qqq-$init"
    [ -f "$d/latest" ] || $Q train --config configs/llama-w4a8.yaml --set quant.preset=w4a8-qqq --set out_dir="$d" \
      --set quant.calib_batches=16 --init-quant $init >"$OUT/train-qat-$init.log" 2>&1
    echo "== qat+$init w4a8-qqq"
    $Q eval --model "$d" --data $DATA --kl-divergence runs/tiny
  done
} 2>&1 | tee "$OUT/eval-qat.txt"
