#!/usr/bin/env bash
# Post-training methods and QAT on the small model (configs/small.yaml
# trained 1500 steps of 8 x 256 tokens, 3.1M tokens, 1.5 epochs of the
# training split: qat train --config configs/small.yaml --set
# train.steps=1500) and the held-out SOTU addresses (the first 16 batches
# of 8 x 256 tokens, 33k of the split's 220k tokens, the same for every
# row): RTN, GPTQ, QQQ (per channel and g128), GWQ at W4A16-g128, W4A8 and
# W3A16-g128, KL divergence from the FP32 model; then 60 QAT steps from
# each post-training start at each grid (configs/small-*-qat.yaml). The
# small model's ffn width, 1376, is no multiple of 128: its down_proj rows
# (1376 inputs) take groups of 32 in the g128 grids (per channel for
# QQQ-g128). Every row is kept in its own file under runs/ptq-small/rows/
# (a rerun skips finished rows); eval.txt and eval-qat.txt collect them.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
DATA=runs/data/sotu-8k
OUT=runs/ptq-small
B=${BATCHES:-16}
mkdir -p "$OUT/rows"
[ -f runs/small/latest ] || { echo "train the small model first: qat train --config configs/small.yaml"; exit 2; }
w() { echo "{\"format\": \"int\", \"bits\": $1, \"symmetric\": true, \"granularity\": \"$2\", \"group_size\": $3, \"scale\": \"minmax\"${4:-}}"; }
A8='{"format": "int", "bits": 8, "symmetric": true, "granularity": "token", "scale": "minmax", "restricted": true}'
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 4 group 32)}, {\"match\": \"model.layers.*\", \"weights\": $(w 4 group 128)}]" >"$OUT/w4a16-g128.json"
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 3 group 32)}, {\"match\": \"model.layers.*\", \"weights\": $(w 3 group 128)}]" >"$OUT/w3a16-g128.json"
echo "[{\"match\": \"model.layers.*.mlp.down_proj\", \"weights\": $(w 4 channel 0 ', "restricted": true'), \"activations\": $A8}, {\"match\": \"model.layers.*\", \"weights\": $(w 4 group 128 ', "two_level": true'), \"activations\": $A8}]" >"$OUT/w4a8-qqq-g128.json"

# row NAME HEADER MODEL: evaluate MODEL into rows/NAME.txt unless it is there
row() {
  local f="$OUT/rows/$1.txt"
  if [ ! -s "$f" ]; then
    { echo "== $2"; $Q eval --model "$3" --data $DATA --seq 256 --batches $B ${4:+--kl-divergence $4}; } >"$f.tmp" 2>&1
    mv "$f.tmp" "$f"
  fi
  cat "$f"
}

{
  row fp32 fp32 runs/small
  for grid in w4a16-g128 w4a8-qqq w4a8-qqq-g128 w3a16-g128; do
    for m in rtn gptq qqq gwq gwq+gptq; do
      case "$grid/$m" in w4a8-qqq-g128/gwq*|w4a8-qqq-g128/gptq|w4a8-qqq/gwq+gptq|w3a16*/gwq+gptq|w4a16*/qqq|w3a16*/qqq) continue ;; esac
      what=(--rules "$OUT/$grid.json"); [ "$grid" = w4a8-qqq ] && what=(--preset w4a8-qqq)
      method=(--method "${m%%+*}"); [ "$m" = gwq+gptq ] && method=(--method gwq --gwq-base gptq)
      [ -f "$OUT/$grid-$m/model.safetensors" ] ||
      /usr/bin/time -v $Q ptq "${method[@]}" "${what[@]}" --model runs/small --out "$OUT/$grid-$m" --data $DATA \
        --seq 256 --calib-batches 16 --batches 1 >"$OUT/ptq-$grid-$m.log" 2>&1
      row "$grid-$m" "$m $grid (peak RSS $(grep 'Maximum resident' "$OUT/ptq-$grid-$m.log" | awk '{printf "%.0f", $6/1024}') MiB)" "$OUT/$grid-$m" runs/small
    done
  done
} 2>&1 | tee "$OUT/eval.txt"
{
  for grid in w4a8-qqq w4a16-g128 w3a16-g128; do
    cfg=configs/small-${grid%-qqq}-qat.yaml
    for init in rtn gptq qqq gwq; do
      [ "$init" = qqq ] && [ "$grid" != w4a8-qqq ] && continue
      d="$OUT/qat-$grid-$init"
      if [ -f "$d/latest" ]; then # finish a killed run (a finished one returns at once)
        $Q train --resume "$d" >>"$OUT/train-qat-$grid-$init.log" 2>&1
      else
        $Q train --config $cfg --set out_dir="$d" --init-quant $init >"$OUT/train-qat-$grid-$init.log" 2>&1
      fi
      row "qat-$grid-$init" "qat+$init $grid" "$d" runs/small
    done
  done
} 2>&1 | tee "$OUT/eval-qat.txt"
