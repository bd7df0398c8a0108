#!/usr/bin/env bash
# Runs the PyTorch CPU baseline (../shared/peers/pytorch/bench_llama.py, fp32
# tiny and small: forward + backward + clip + AdamW) and `qat bench` on the
# same configs, one after the other in one run, with the same thread counts.
# PyTorch gets Debian's OpenMP build of OpenBLAS (unpacked, not installed), so
# torch.set_num_threads bounds its BLAS threads too; neither side inherits
# OPENBLAS_CORETYPE. Output: .cache/bench/{pytorch.jsonl,qat-*.jsonl,report.txt}
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-../shared/peers/pytorch/bench_llama.py}
OUT=.cache/bench
mkdir -p "$OUT"
OB=$PWD/.cache/openblas-openmp
if [ ! -e "$OB/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3" ]; then
  mkdir -p "$OB" && (cd "$OB" && apt-get download libopenblas0-openmp >/dev/null && dpkg-deb -x libopenblas0-openmp_*.deb .)
fi
make -s build
: > "$OUT/pytorch.jsonl"
for cfg in ${CONFIGS:-tiny small}; do
  steps=16; [ "$cfg" = small ] && steps=10
  for t in 1 2; do
    env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH=$OB/usr/lib/x86_64-linux-gnu/openblas-openmp \
      /usr/bin/python3 "$PEER" train --config "$cfg" --threads "$t" --steps $steps --warmup 3 --measure $((steps-3)) \
      --variants fp32 --out "$OUT/pytorch.jsonl" >/dev/null
  done
  env -u OPENBLAS_CORETYPE ./bin/qat bench --config configs/$cfg.yaml --steps $((steps-3)) --warmup 3 --json "$OUT/qat-$cfg.jsonl" > "$OUT/qat-$cfg.txt"
done
python3 - "$OUT" <<'PY' | tee "$OUT/report.txt"
import json, sys, collections
out = sys.argv[1]
pt = [json.loads(l) for l in open(f"{out}/pytorch.jsonl")]
print("config threads | PyTorch ms/step tok/s | qat ms/step tok/s | speed-up")
for r in pt:
    q = {(x["name"], x["threads"]): x["value"] for x in map(json.loads, open(f"{out}/qat-{r['config']}.jsonl"))}
    ms = q[(r["config"] + " step", r["threads"])]
    print(f"{r['config']:6} {r['threads']}       | {r['step_s']*1e3:8.1f} {r['tok_s']:7.0f} | {ms:8.1f} {1e3*r['tok_s']*r['step_s']/ms:7.0f} | {r['step_s']*1e3/ms:5.2f}x")
PY
