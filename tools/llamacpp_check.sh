#!/usr/bin/env bash
# make llamacpp-check: llama.cpp loads and runs our GGUF exports, and its
# perplexity on the held-out addresses matches ours.
#
# Builds llama.cpp (CPU) from a git snapshot of its public repository with
# ../shared/peers/llamacpp/build.sh (LLAMACPP_GIT: the snapshot's git
# directory; LLAMACPP_BIN: skip the build and use these binaries), exports
# the `make run` checkpoint as f32 and q8_0 and the w4a16-g32 QAT fine-tune
# as q4_0, generates with llama-simple, and compares llama-perplexity with
# `qat eval --text` on the same file and chunks (128 tokens, second halves
# scored). Needs runs/tiny and runs/tiny-w4a16-g32 (tools/results.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
Q=./bin/qat
OUT=runs/llamacpp
mkdir -p "$OUT"
if [ -z "${LLAMACPP_BIN:-}" ]; then
  : "${LLAMACPP_GIT:?set LLAMACPP_GIT to a git snapshot of github.com/ggerganov/llama.cpp (or LLAMACPP_BIN to built binaries)}"
  WORK="$PWD/$OUT/llamacpp" bash ../shared/peers/llamacpp/build.sh "$LLAMACPP_GIT"
  LLAMACPP_BIN="$PWD/$OUT/llamacpp/build/bin"
fi
[ -f runs/tiny/latest ] && [ -f runs/tiny-w4a16-g32/latest ] || { echo "needs runs/tiny (make run) and runs/tiny-w4a16-g32 (tools/results.sh)"; exit 2; }
# the held-out text: the validation addresses (years ending in 7)
ls ../shared/data/sotu | grep -E '^[0-9]{3}7[^0-9]' | sed 's|^|../shared/data/sotu/|' | xargs cat > "$OUT/validation.txt"
$Q export --model runs/tiny --quant f32 --out "$OUT/tiny-f32.gguf" --force
$Q export --model runs/tiny --quant q8_0 --out "$OUT/tiny-q8_0.gguf" --force
$Q export --model runs/tiny-w4a16-g32 --quant q4_0 --out "$OUT/tiny-w4a16-g32-q4_0.gguf" --force
head -c 100000 "$OUT/validation.txt" > "$OUT/validation-100k.txt"
status=0
ppl() { sed -n 's/.*perplexity \([0-9.]*\) over.*/\1/p'; }
lppl() { sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
within() { python3 -c "import sys; a,b=$1,$2; print(f'{100*(b-a)/a:+.3f}%'); sys.exit(0 if abs(b-a)/a <= 0.005 else 1)"; }
echo "whole held-out text (246k tokens), chunks of 128: qat with unpacked weights vs llama-perplexity batched"
echo "first 100k characters: qat --packed (Q8_0 activations, one token at a time) vs llama-perplexity -ub 1 (its one-token path)"
printf "%-22s %10s %10s %9s | %10s %10s %9s\n" model qat llama.cpp diff "qat pk" "llama ub1" diff
for m in tiny-f32 tiny-q8_0 tiny-w4a16-g32-q4_0; do
  f="$OUT/$m.gguf"
  "$LLAMACPP_BIN/llama-simple" -m "$f" -n 16 "The state of the Union" >"$OUT/$m.simple.txt" 2>&1 || { echo "llama-simple failed on $f"; status=1; }
  a=$($Q eval --model "$f" --text "$OUT/validation.txt" --ctx 128 --threads 2 | ppl)
  b=$("$LLAMACPP_BIN/llama-perplexity" -m "$f" -f "$OUT/validation.txt" -c 128 -b 128 -t 2 2>&1 | lppl)
  d1=$(within "$a" "$b") && ok1=1 || ok1=0
  c=$($Q eval --model "$f" --text "$OUT/validation-100k.txt" --ctx 128 --threads 2 $( [ $m = tiny-f32 ] || echo --packed ) | ppl)
  e=$("$LLAMACPP_BIN/llama-perplexity" -m "$f" -f "$OUT/validation-100k.txt" -c 128 -b 128 -ub 1 -t 2 2>&1 | lppl)
  d2=$(within "$c" "$e") && ok2=1 || ok2=0
  printf "%-22s %10s %10s %9s | %10s %10s %9s\n" "$m" "$a" "$b" "$d1" "$c" "$e" "$d2"
  # the one-token paths must agree for every model, the batched one where
  # llama.cpp computes in float (f32); its batched Q4_0/Q8_0 path
  # quantizes differently (AMX/tinyBLAS kernels) and is reported only
  [ $ok2 = 1 ] || status=1
  [ $m != tiny-f32 ] || [ $ok1 = 1 ] || status=1
done
exit $status
