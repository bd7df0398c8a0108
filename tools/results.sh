#!/usr/bin/env bash
# Reproduces docs/results.md: QAT against RTN post-training quantization and
# a full-precision control on the tiny model and the held-out SOTU
# addresses. Needs the checkpoint of `make run` (runs/tiny). Every fine-tune
# starts from it with the same steps, learning rate and batches.
set -euo pipefail
cd "$(dirname "$0")/.."
export -n OPENBLAS_CORETYPE OPENBLAS_L2_SIZE 2>/dev/null || true
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
DATA=runs/data/sotu
OUT=runs/results
mkdir -p "$OUT"
[ -f runs/tiny/latest ] || { echo "run make run first (runs/tiny)"; exit 2; }
for c in fp-control w4a16-g32 w4a8 w4a4 w4a4-kurtosis fp8; do
  dir=$(grep '^out_dir:' configs/llama-$c.yaml | awk '{print $2}')
  if [ -f "$dir/latest" ]; then $Q train --resume "$dir" >"$OUT/train-$c.log" 2>&1
  else $Q train --config configs/llama-$c.yaml >"$OUT/train-$c.log" 2>&1; fi
  echo "trained $c"
done
ev() { $Q eval --data $DATA --kl-divergence runs/tiny "$@"; }
{
  echo "== fp32"; ev --model runs/tiny
  echo "== control"; ev --model runs/tiny-fp-control
  for p in w4a16-g32 w4a8 w4a4 fp8; do
    echo "== rtn $p"; ev --model runs/tiny --preset $p
    echo "== qat $p"; ev --model runs/tiny-$p
  done
  echo "== qat w4a4-kurtosis"; ev --model runs/tiny-w4a4-kurt
} >"$OUT/eval.txt" 2>&1
# QAT models against the control: the degradation their quantization
# leaves, without the drift that fine-tuning itself causes
{
  for p in w4a16-g32 w4a8 w4a4 fp8; do
    echo "== qat $p"; $Q eval --data $DATA --kl-divergence runs/tiny-fp-control --model runs/tiny-$p
  done
  echo "== qat w4a4-kurtosis"; $Q eval --data $DATA --kl-divergence runs/tiny-fp-control --model runs/tiny-w4a4-kurt
} >"$OUT/eval-control.txt" 2>&1
for m in tiny tiny-w4a4 tiny-w4a4-kurt; do
  $Q eval --model runs/$m --data $DATA --batches 60 --kurtosis >"$OUT/kurtosis-$m.txt"
done
for c in fp-control w4a4; do grep -h "tokens/s" "$OUT/train-$c.log" | tail -3 > "$OUT/speed-$c.txt"; done
# its section of docs/results.md (the W4A4 tables of tools/results/w4a4.sh
# are sections of their own and stay as they are)
python3 tools/results_md.py "$OUT" > "$OUT/results.md"
python3 tools/results/section.py docs/results.md results.sh --command tools/results.sh <"$OUT/results.md"
cat "$OUT/results.md"
