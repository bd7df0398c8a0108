#!/usr/bin/env python3
"""Formats runs/results (tools/results.sh) as docs/results.md."""
import re, statistics, sys

out = sys.argv[1]
def parse(path):
    ev, cur = {}, None
    for line in open(path):
        if line.startswith("== "):
            cur = line[3:].strip(); ev[cur] = {}
        m = re.search(r"loss ([\d.]+)\s+perplexity ([\d.]+)\s+bits per byte ([\d.]+)", line)
        if m and cur:
            ev[cur].update(loss=float(m[1]), ppl=float(m[2]), bpb=float(m[3]))
        m = re.search(r"mean ([\d.]+)\s+p99 ([\d.]+) nats\s+top-1 agreement ([\d.]+)%", line)
        if m and cur:
            ev[cur].update(kl=float(m[1]), p99=float(m[2]), top1=float(m[3]))
    return ev
import os
ev = parse(f"{out}/eval.txt")
evc = parse(f"{out}/eval-control.txt") if os.path.exists(f"{out}/eval-control.txt") else {}

def kurt(name):
    vals = {}
    for line in open(f"{out}/kurtosis-{name}.txt"):
        m = re.match(r"kurtosis (\S+)\s+([\d.]+)", line)
        if m: vals[m[1]] = float(m[2])
    return vals

fp, ctl = ev["fp32"], ev["control"]
print("## QAT results: tiny model, held-out SOTU addresses (one seed)\n")
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
if evc:
    print("KL divergence of each QAT model from the control (the same fine-tune in full precision), and of RTN from FP32:")
    print("what quantization alone costs, without the drift of fine-tuning.\n")
    print("| preset | RTN mean KL (vs FP32) | QAT mean KL (vs control) | RTN top-1 | QAT top-1 (vs control) |")
    print("|---|---:|---:|---:|---:|")
    for p in ["w4a16-g32", "w4a8", "w4a4", "fp8"]:
        r, q = ev[f"rtn {p}"], evc.get(f"qat {p}", {})
        print(f"| {p} | {r['kl']:.5f} | {q.get('kl', float('nan')):.5f} | {r['top1']:.2f}% | {q.get('top1', float('nan')):.2f}% |")
    q = evc.get("qat w4a4-kurtosis", {})
    print(f"| w4a4 + kurtosis reg. | {ev['rtn w4a4']['kl']:.5f} | {q.get('kl', float('nan')):.5f} | {ev['rtn w4a4']['top1']:.2f}% | {q.get('top1', float('nan')):.2f}% |")
    print()
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

# Optimizer states (tools/states.sh), when measured.
import os
if os.path.exists(f"{out}/states.txt"):
    st, cur, rss, bpp = {}, None, {}, {}
    for line in open(f"{out}/states.txt"):
        if line.startswith("== "):
            cur = line[3:].split()[:2]; cur = " ".join(cur); st[cur] = {}
            m = re.search(r"([\d.]+) bytes per parameter", line)
            if m: bpp[cur.split()[1]] = float(m[1])
        m = re.search(r"loss ([\d.]+)\s+perplexity ([\d.]+)\s+bits per byte ([\d.]+)", line)
        if m and cur:
            st[cur].update(loss=float(m[1]), ppl=float(m[2]), bpb=float(m[3]))
        m = re.match(r"rss (\w+): peak RSS (\d+) KB", line)
        if m: rss[m[1]] = int(m[2]) / 1024
    print("\n## Optimizer states: fp32, int8 and fp8 AdamW moments\n")
    print("Reproduce: `tools/states.sh` (after `make run`). Scratch: configs/tiny.yaml trained from scratch for 600 steps;")
    print("W4A4: the QAT fine-tune of configs/llama-w4a4.yaml. Only the optimizer state storage differs; whole validation split.\n")
    print("| run | fp32 states | int8 states | fp8 states | int8 vs fp32 | fp8 vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in ["scratch", "w4a4"]:
        a, b, c = (st.get(f"{run} {k}", {}).get("loss", float("nan")) for k in ["fp32", "int8", "fp8"])
        print(f"| {run} (val loss) | {a:.4f} | {b:.4f} | {c:.4f} | {100*(b-a)/a:+.2f}% | {100*(c-a)/a:+.2f}% |")
    if bpp:
        print(f"| optimizer bytes per model parameter (tiny) | {bpp.get('fp32', 0):.2f} | {bpp.get('int8', 0):.2f} | {bpp.get('fp8', 0):.2f} | | |")
    if rss:
        print(f"| peak RSS, small config training (MB) | {rss.get('fp32', 0):.0f} | {rss.get('int8', 0):.0f} | {rss.get('fp8', 0):.0f} | | |")
    print("\nBytes per model parameter include the tensors that keep fp32 moments (norms, tensors under 4096 values);")
    print("the 8-bit tensors themselves store 2.03 (int8, absmax per 256) and 2.06 (fp8, bfloat16 range per 128) bytes per value.")

# LR-QAT (tools/lrqat.sh), when measured.
if os.path.exists("runs/lrqat/eval.txt"):
    import subprocess
    print(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "lrqat_md.py"), "runs/lrqat"],
                         capture_output=True, text=True, check=True).stdout, end="")

# Post-training methods (tools/ptq.sh), when measured.
if os.path.exists("runs/ptq/eval.txt"):
    import subprocess
    print(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "ptq_md.py"), "runs/ptq"],
                         capture_output=True, text=True, check=True).stdout, end="")

# Post-training methods and QAT on the small model (tools/ptq_small.sh), when measured.
if os.path.exists("runs/ptq-small/eval.txt"):
    import subprocess
    print(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "ptq_small_md.py"), "runs/ptq-small"],
                         capture_output=True, text=True, check=True).stdout, end="")
