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
$Q export --model runs/tiny --quant f32 --out "$OUT/tiny-f32.gguf"
$Q export --model runs/tiny --quant q8_0 --out "$OUT/tiny-q8_0.gguf"
$Q export --model runs/tiny-w4a16-g32 --quant q4_0 --out "$OUT/tiny-w4a16-g32-q4_0.gguf"
status=0
printf "%-28s %12s %12s %9s\n" model qat llama.cpp diff
for m in tiny-f32 tiny-q8_0 tiny-w4a16-g32-q4_0; do
  f="$OUT/$m.gguf"
  "$LLAMACPP_BIN/llama-simple" -m "$f" -n 16 "The state of the Union" >"$OUT/$m.simple.txt" 2>&1 || { echo "llama-simple failed on $f"; status=1; }
  ours=$($Q eval --model "$f" --text "$OUT/validation.txt" --ctx 128 --threads 2 | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p')
  theirs=$("$LLAMACPP_BIN/llama-perplexity" -m "$f" -f "$OUT/validation.txt" -c 128 -b 128 -t 2 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  diff=$(python3 -c "print(f'{100*($theirs-$ours)/$ours:+.2f}%')")
  printf "%-28s %12s %12s %9s\n" "$m" "$ours" "$theirs" "$diff"
  python3 -c "import sys; sys.exit(0 if abs($theirs-$ours)/$ours <= 0.005 else 1)" || status=1
done
exit $status
