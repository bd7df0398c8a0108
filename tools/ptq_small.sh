#!/usr/bin/env bash
# Post-training methods and QAT on the small model (configs/small.yaml
# trained 1500 steps of 8 x 256 tokens, 3.1M tokens, 1.5 epochs of the
# training split: qat train --config configs/small.yaml --set train.steps=1500) and the held-out SOTU addresses (the first 16 batches of 8 x 256
# tokens, 33k of the split's 220k tokens, the same for every row): RTN,
# GPTQ, QQQ (per channel and g128), GWQ at W4A16-g128, W4A8 and W3A16-g128,
# KL divergence from the FP32 model; then 60 QAT steps at W4A8 from each
# post-training start. The small model's ffn width, 1376, is no multiple of
# 128: its down_proj rows (1376 inputs) take groups of 32 in the g128 grids
# (per channel for QQQ-g128). Writes runs/ptq-small/eval.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
DATA=runs/data/sotu-8k
OUT=runs/ptq-small
B=${BATCHES:-16}
mkdir -p "$OUT"
[ -f runs/small/latest ] || { echo "train the small model first: qat train --config configs/small.yaml"; exit 2; }
w() { echo "{\"format\": \"int\", \"bits\": $1, \"symmetric\": true, \"granularity\": \"$2\", \"group_size\": $3, \"scale\": \"minmax\"${4:-}}"; }
A8='{"format": "int", "bits": 8, "symmetric": true, "granularity": "token", "scale": "minmax", "restricted": true}'
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 4 group 32)}, {\"match\": \"model.layers.*\", \"weights\": $(w 4 group 128)}]" >"$OUT/w4a16-g128.json"
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 3 group 32)}, {\"match\": \"model.layers.*\", \"weights\": $(w 3 group 128)}]" >"$OUT/w3a16-g128.json"
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 4 channel 0 ', "restricted": true'), \"activations\": $A8}, {\"match\": \"model.layers.*\", \"weights\": $(w 4 group 128 ', "two_level": true'), \"activations\": $A8}]" >"$OUT/w4a8-qqq-g128.json"
{
  echo "== fp32"; $Q eval --model runs/small --data $DATA --seq 256 --batches $B
  for grid in w4a16-g128 w4a8-qqq w4a8-qqq-g128 w3a16-g128; do
    for m in rtn gptq qqq gwq gwq+gptq; do
      case "$grid/$m" in w4a8-qqq-g128/gwq*|w4a8-qqq-g128/gptq|w4a8-qqq/gwq+gptq|w3a16*/gwq+gptq|w4a16*/qqq|w3a16*/qqq) continue ;; esac
      what=(--rules "$OUT/$grid.json"); [ "$grid" = w4a8-qqq ] && what=(--preset w4a8-qqq)
      method=(--method "${m%%+*}"); [ "$m" = gwq+gptq ] && method=(--method gwq --gwq-base gptq)
      [ -f "$OUT/$grid-$m/model.safetensors" ] ||
      /usr/bin/time -v $Q ptq "${method[@]}" "${what[@]}" --model runs/small --out "$OUT/$grid-$m" --data $DATA \
        --seq 256 --calib-batches 16 --batches 1 >"$OUT/ptq-$grid-$m.log" 2>&1
      echo "== $m $grid (peak RSS $(grep 'Maximum resident' "$OUT/ptq-$grid-$m.log" | awk '{printf "%.0f", $6/1024}') MiB)"
      $Q eval --model "$OUT/$grid-$m" --data $DATA --seq 256 --batches $B --kl-divergence runs/small
    done
  done
} 2>&1 | tee "$OUT/eval.txt"
{
  for init in rtn gptq qqq gwq; do
    d="$OUT/qat-w4a8-qqq-$init"
    [ -f "$d/latest" ] || $Q train --config configs/small-w4a8-qat.yaml --set out_dir="$d" --init-quant $init >"$OUT/train-qat-$init.log" 2>&1
    echo "== qat+$init w4a8-qqq"
    $Q eval --model "$d" --data $DATA --seq 256 --batches $B --kl-divergence runs/small
  done
} 2>&1 | tee "$OUT/eval-qat.txt"
