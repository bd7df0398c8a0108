#!/usr/bin/env bash
# Runs the PyTorch CPU baseline (../shared/peers/pytorch/bench_llama.py, fp32
# tiny and small: forward + backward + clip + AdamW) and `qat bench` on the
# same configs, one after the other in one run, with the same thread counts.
# PyTorch gets Debian's OpenMP build of OpenBLAS (unpacked, not installed), so
# torch.set_num_threads bounds its BLAS threads too; neither side inherits
# OPENBLAS_CORETYPE. REPEAT=n runs the whole comparison n times, alternating
# the two sides, and keeps each side's lowest median step per cell (as
# ../shared/peers/pytorch/RESULTS.md does on this shared machine).
# Output: .cache/bench/{pytorch.jsonl,qat-*.jsonl,report.txt,report.md}; the
# markdown table (with qat's MFU of the sgemm peak, the range over the runs)
# replaces its section of README.md. REPORT_ONLY=1 makes the report from the
# files already in .cache/bench without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-../shared/peers/pytorch/bench_llama.py}
OUT=.cache/bench
mkdir -p "$OUT"
if [ "${REPORT_ONLY:-0}" != 1 ]; then
OB=$PWD/.cache/openblas-openmp
if [ ! -e "$OB/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3" ]; then
  mkdir -p "$OB" && (cd "$OB" && apt-get download libopenblas0-openmp >/dev/null && dpkg-deb -x libopenblas0-openmp_*.deb .)
fi
make -s build
: > "$OUT/pytorch.jsonl"
rm -f "$OUT"/qat-*.jsonl
for rep in $(seq "${REPEAT:-1}"); do
  for cfg in ${CONFIGS:-tiny small}; do
    steps=16; [ "$cfg" = small ] && steps=10
    for t in 1 2; do
      env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH=$OB/usr/lib/x86_64-linux-gnu/openblas-openmp \
        /usr/bin/python3 "$PEER" train --config "$cfg" --threads "$t" --steps $steps --warmup 3 --measure $((steps-3)) \
        --variants fp32 --out "$OUT/pytorch.jsonl" >/dev/null
    done
    env -u OPENBLAS_CORETYPE ./bin/qat bench --config configs/$cfg.yaml --steps $((steps-3)) --warmup 3 \
      --json "$OUT/qat-$cfg-$rep.jsonl" > "$OUT/qat-$cfg.txt"
  done
done
fi
python3 - "$OUT" <<'PY' | tee "$OUT/report.txt"
import glob, json, sys
out = sys.argv[1]
pt, qat, mfu = {}, {}, {}
for r in map(json.loads, open(f"{out}/pytorch.jsonl")):
    k = (r["config"], r["threads"])
    pt.setdefault(k, []).append(r)
for f in glob.glob(f"{out}/qat-*-*.jsonl"):
    for x in map(json.loads, open(f)):
        if x["kind"] == "train" and x["name"].endswith(" step"):
            qat.setdefault((x["name"][:-5], x["threads"]), []).append(x["value"])
        if x["kind"] == "train" and x["name"].endswith(" MFU"):
            mfu.setdefault((x["name"][:-4], x["threads"]), []).append(100 * x["value"])
print("config threads | PyTorch ms/step tok/s | qat ms/step tok/s | speed-up | qat MFU | runs")
md = ["| config | threads | PyTorch ms/step | qat ms/step | speed-up | MFU (of sgemm peak) |",
      "|---|---:|---:|---:|---:|---:|"]
for k, rs in pt.items():
    r = min(rs, key=lambda r: r["step_s"])
    ms = min(qat[k])
    tok = r["tok_s"] * r["step_s"]  # tokens per step
    lo, hi = round(min(mfu[k])), round(max(mfu[k]))
    m = f"{lo}%" if lo == hi else f"{lo}-{hi}%"
    print(f"{k[0]:6} {k[1]}       | {r['step_s']*1e3:8.1f} {r['tok_s']:7.0f} | {ms:8.1f} {1e3*tok/ms:7.0f} | {r['step_s']*1e3/ms:5.2f}x | {m:>7} | {len(rs)}")
    md.append(f"| {k[0]} | {k[1]} | {r['step_s']*1e3:.1f} | {ms:.1f} | {r['step_s']*1e3/ms:.2f}x | {m} |")
open(f"{out}/report.md", "w").write("\n".join(md) + "\n")
PY
# the table of README.md's performance notes
python3 tools/results/section.py README.md bench-vs-pytorch --command "REPEAT=2 tools/bench_vs_pytorch.sh" <"$OUT/report.md"
