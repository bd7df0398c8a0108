#!/usr/bin/env python3
"""The small-model post-training section of docs/results.md from
runs/ptq-small (tools/ptq_small.sh)."""
import os, re, sys

out = sys.argv[1] if len(sys.argv) > 1 else "runs/ptq-small"


def parse(path):
    rows, cur = [], None
    for line in open(path):
        if line.startswith("== "):
            head = line[3:].strip()
            m = re.search(r"peak RSS (\d+) MiB", head)
            cur = {"name": head.split(" (")[0], "rss": m[1] if m else ""}
            rows.append(cur)
        m = re.search(r"loss ([\d.]+)\s+perplexity ([\d.]+)", line)
        if m and cur is not None:
            cur["loss"], cur["ppl"] = float(m[1]), float(m[2])
        m = re.search(r"mean ([\d.]+)\s+p99 ([\d.]+) nats\s+top-1 agreement ([\d.]+)%", line)
        if m and cur is not None:
            cur["kl"], cur["top1"] = float(m[1]), float(m[3])
    return rows


rows = parse(f"{out}/eval.txt")
if os.path.exists(f"{out}/eval-qat.txt"):
    rows += parse(f"{out}/eval-qat.txt")
fp = next(r for r in rows if r["name"] == "fp32")
print("\n## Post-training methods and QAT on the small model\n")
print("Reproduce: `qat train --config configs/small.yaml --set train.steps=1500` (29.5M parameters, 1500 steps of 8 x 256")
print("tokens = 3.1M tokens, 1.5 epochs of the training split, about an hour here; held-out loss 5.11, 4.72, 4.43 at steps")
print("500, 1000, 1500: still falling, but far enough from the start that quantization error shows), then `tools/ptq_small.sh`. 16 calibration batches of 8 x 256 tokens; held-out: the first 16")
print("batches of 8 x 256 tokens of the validation split (33k of its 220k tokens, the same for every row); KL divergence")
print("from the FP32 model. g128 grids put groups of 32 on down_proj, whose 1376 inputs are no multiple of 128 (per channel")
print("for QQQ-g128). W4A8 is QQQ's grid: int4 per channel on [-7, 7] (or int4 g128 folded into int8 per channel), int8")
print("per-token symmetric activations. QAT: 60 steps (8 x 256 tokens each, lr 5e-5 cosine to 5e-6) from each post-training start at each")
print("grid (configs/small-w4a8-qat.yaml, small-w4a16-g128-qat.yaml, small-w3a16-g128-qat.yaml; `qat train --init-quant M`).\n")
print("| method | grid | val loss | perplexity | ppl / FP32 | KL from FP32 (nats) | top-1 agreement | ptq peak RSS (MiB) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    p = r["name"].split()
    kl = f"{r['kl']:.5f}" if "kl" in r else "-"
    top1 = f"{r['top1']:.2f}%" if "top1" in r else "-"
    ratio = r.get("ppl", float("nan")) / fp["ppl"]
    print(f"| {p[0]} | {p[1] if len(p) > 1 else '-'} | {r.get('loss', float('nan')):.4f} | {r.get('ppl', float('nan')):.2f} | "
          f"{ratio:.3f} | {kl} | {top1} | {r['rss']} |")
kl = {r["name"]: r.get("kl") for r in rows}
ppl = {r["name"]: r.get("ppl") for r in rows}
print()
for grid in ["w4a16-g128", "w4a8-qqq", "w4a8-qqq-g128", "w3a16-g128"]:
    base = kl.get(f"rtn {grid}")
    if not base:
        continue
    parts = [f"{m} {base / kl[f'{m} {grid}']:.1f}x" for m in ["gptq", "qqq", "gwq", "gwq+gptq"] if kl.get(f"{m} {grid}")]
    print(f"- {grid}: RTN's KL from FP32 divided by each method's: " + ", ".join(parts) + ".")
for grid in ["w4a16-g128", "w4a8-qqq", "w3a16-g128"]:
    q = [(m, kl[f"qat+{m} {grid}"], ppl[f"qat+{m} {grid}"]) for m in ["rtn", "gptq", "qqq", "gwq"] if kl.get(f"qat+{m} {grid}")]
    if q:
        print(f"- {grid}, after 60 QAT steps (KL, perplexity): " + ", ".join(f"from {m} {k:.5f} / {p:.2f}" for m, k, p in q) + ".")
lr = f"{out}/rows/lr3e-4-qat-w4a8-qqq-rtn.txt"
if os.path.exists(lr):
    r = parse(lr)[0]
    print(f"- The QAT learning rate matters more than the start: the same 60 steps from RTN at W4A8 with lr 3e-4 (twice the "
          f"pretraining's last, 1.5e-4) end at perplexity {r['ppl']:.2f} and KL {r['kl']:.4f}, worse than RTN alone; a fine-tune "
          f"this short has to start below the pretraining's last learning rate.")
