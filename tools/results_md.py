#!/usr/bin/env python3
"""Formats runs/results (tools/results.sh) as docs/results.md."""
import re, statistics, sys

out = sys.argv[1]
ev, cur = {}, None
for line in open(f"{out}/eval.txt"):
    if line.startswith("== "):
        cur = line[3:].strip(); ev[cur] = {}
    m = re.search(r"loss ([\d.]+)\s+perplexity ([\d.]+)\s+bits per byte ([\d.]+)", line)
    if m and cur:
        ev[cur].update(loss=float(m[1]), ppl=float(m[2]), bpb=float(m[3]))
    m = re.search(r"mean ([\d.]+)\s+p99 ([\d.]+) nats\s+top-1 agreement ([\d.]+)%", line)
    if m and cur:
        ev[cur].update(kl=float(m[1]), p99=float(m[2]), top1=float(m[3]))

def kurt(name):
    vals = {}
    for line in open(f"{out}/kurtosis-{name}.txt"):
        m = re.match(r"kurtosis (\S+)\s+([\d.]+)", line)
        if m: vals[m[1]] = float(m[2])
    return vals

fp, ctl = ev["fp32"], ev["control"]
print("# QAT results: tiny model, held-out SOTU addresses\n")
print("Reproduce: `make run` (the FP32 checkpoint), then `tools/results.sh`. Every fine-tune starts from the")
print("`make run` checkpoint and runs the same 300 steps, learning rate and batches (configs/llama-*.yaml);")
print("the control is that fine-tune in full precision, so extra training is not mistaken for recovery.")
print("Metrics on the whole validation split (23 addresses, 246k tokens); KL divergence from the FP32 model.\n")
print("| model | val loss | perplexity | bits/byte | mean KL | p99 KL | top-1 agree | recovery |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
def row(name, r, rec=""):
    print(f"| {name} | {r['loss']:.4f} | {r['ppl']:.2f} | {r['bpb']:.4f} | {r['kl']:.5f} | {r['p99']:.5f} | {r['top1']:.2f}% | {rec} |")
row("FP32 (make run)", fp)
row("FP32 control fine-tune", ctl)
for p in ["w4a16-g32", "w4a8", "w4a4", "fp8"]:
    rtn, q = ev[f"rtn {p}"], ev[f"qat {p}"]
    row(f"RTN {p}", rtn)
    deg = rtn["loss"] - fp["loss"]
    rec = 1 - (q["loss"] - ctl["loss"]) / deg if deg > 1e-9 else float("nan")
    row(f"QAT {p}", q, f"{100*rec:.0f}%")
q = ev["qat w4a4-kurtosis"]
deg = ev["rtn w4a4"]["loss"] - fp["loss"]
row("QAT w4a4 + kurtosis reg.", q, f"{100*(1 - (q['loss'] - ctl['loss'])/deg):.0f}%")
print("\nRecovery = 1 - (QAT loss - control loss) / (RTN loss - FP32 loss): the share of RTN's degradation that QAT")
print("removes, measured against the control rather than against the starting checkpoint.\n")
print("## Linear-input kurtosis (mean over tokens, 60 validation batches)\n")
print("| layer input | FP32 | QAT w4a4 | QAT w4a4 + kurtosis reg. |")
print("|---|---:|---:|---:|")
a, b, c = kurt("tiny"), kurt("tiny-w4a4"), kurt("tiny-w4a4-kurt")
for kind in ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]:
    for name in sorted(k for k in a if k.endswith(kind)):
        print(f"| {name} | {a[name]:.2f} | {b.get(name, float('nan')):.2f} | {c.get(name, float('nan')):.2f} |")
print(f"| **mean over all linears** | {statistics.mean(a.values()):.2f} | {statistics.mean(b.values()):.2f} | {statistics.mean(c.values()):.2f} |")
print("\n(q/k/v share an input, as do gate/up: one row each.)\n")
print("## Step time (training logs, 2 threads, tokens/s of the last logged steps)\n")
for c in ["fp-control", "w4a4"]:
    print(f"- {c}: " + "; ".join(l.split("  ")[4].strip() if len(l.split('  ')) > 4 else l.strip() for l in open(f"{out}/speed-{c}.txt")))
