#!/usr/bin/env python3
"""The LR-QAT section of docs/results.md from runs/lrqat (tools/lrqat.sh)."""
import re, sys, os

out = sys.argv[1] if len(sys.argv) > 1 else "runs/lrqat"
rows, cur = [], None
for line in open(f"{out}/eval.txt"):
    if line.startswith("== "):
        head = line[3:].strip()
        name = head.split(" (")[0]
        m = re.search(r"train: (\d+) tokens/s, peak RSS (\d+) MiB", head)
        cur = {"name": name, "tps": int(m[1]) if m else None, "rss": int(m[2]) if m else None}
        rows.append(cur)
    m = re.search(r"loss ([\d.]+)\s+perplexity ([\d.]+)", line)
    if m and cur is not None:
        cur["loss"], cur["ppl"] = float(m[1]), float(m[2])
    m = re.match(r"parameters: (\d+) trainable, (\d+) frozen float32 \+ (\d+) frozen int8", line)
    if m and cur is not None:
        cur["train"], cur["frozen"], cur["i8"] = int(m[1]), int(m[2]), int(m[3])

print("\n## LR-QAT, LoRA-QAT and full QAT at W4\n")
print("Reproduce: `tools/lrqat.sh` (after `make run`). Every fine-tune starts from runs/tiny: 300 steps of 8 x 128 tokens,")
print("weights only at 4 bits (symmetric int, minmax `s0`), whole held-out split. Full QAT trains every weight with LSQ steps")
print("(lr 5e-4); LoRA-QAT and LR-QAT train rank-32 adapters (alpha 32, lr 1e-3; LR-QAT's scales at 1e-5) and keep embeddings")
print("and norms frozen. W4 g64 instead of g128: the tiny model's ffn width, 704, is no multiple of 128. `control` is the")
print("full-precision fine-tune over the same 300 steps (configs/llama-fp-control.yaml).\n")
print("| method | grid | val loss | perplexity | vs full QAT | trainable params | peak RSS (MiB) |")
print("|---|---|---:|---:|---:|---:|---:|")
qat = {r["name"].split()[1]: r["ppl"] for r in rows if r["name"].startswith("qat ")}
for r in rows:
    parts = r["name"].split()
    grid = parts[1] if len(parts) > 1 else "-"
    ref = qat.get(grid)
    vs = f"{100*(r['ppl']/ref-1):+.1f}%" if ref and "ppl" in r else ""
    print(f"| {parts[0]} | {grid} | {r.get('loss', float('nan')):.4f} | {r.get('ppl', float('nan')):.2f} | {vs} | "
          f"{r.get('train', '')} | {r['rss'] or ''} |")
by = {(r["name"].split() + ["-"])[0] + " " + (r["name"].split() + ["-"])[1]: r.get("ppl") for r in rows}
for grid in ["channel", "g64"]:
    q, lr, lo, rtn = (by.get(f"{m} {grid}") for m in ["qat", "lrqat", "loraqat", "rtn"])
    if q and lr and rtn:
        print(f"\nW4 {grid}: LR-QAT's perplexity is {100*(lr/q-1):+.1f}% from full QAT's (expectation: at most +2%) and "
              f"{100*(lr/rtn-1):+.1f}% from RTN's; LoRA-QAT's {100*(lo/q-1):+.1f}% from full QAT's.", end="")
print("\nThe paper's ordering on Llama-2-7B (LR-QAT below full QAT) does not hold on this 4M-parameter model: full QAT")
print("and LoRA-QAT, which keep float32 weights, do slightly better, and at W4 this model loses little even to RTN.")
if os.path.exists(f"{out}/speed.txt"):
    sp = {}
    for line in open(f"{out}/speed.txt"):
        m = re.match(r"(\w+): .* ([\d.]+) tokens/s", line)
        if m:
            sp[m[1]] = float(m[2])
    if "qat" in sp:
        print("\nStep time, W4 per channel, 40 steps with nothing else running, 2 threads: " +
              ", ".join(f"{k} {v:.0f} tokens/s ({v/sp['qat']:.2f}x full QAT)" for k, v in sp.items()) + ".")
if os.path.exists(f"{out}/memory.txt"):
    print("\nMemory, 10 training steps from a random start at W4 per channel (`/usr/bin/time -v`, peak RSS), full QAT")
    print("(LSQ, fp32 AdamW moments) against LR-QAT (rank 32):\n")
    print("| config | batch | method | peak RSS (MiB) | tokens/s |")
    print("|---|---|---|---:|---:|")
    mem = {}
    for line in open(f"{out}/memory.txt"):
        m = re.match(r"(\w+) batch (\d+) (\w+): peak RSS (\d+) MiB, (\d+) tokens/s", line)
        if m:
            mem[(m[1], m[3])] = int(m[4])
            print(f"| {m[1]} | {m[2]} x 256 | {m[3]} | {m[4]} | {m[5]} |")
    for cfg in ["base", "small"]:
        if (cfg, "qat") in mem and (cfg, "lrqat") in mem:
            print(f"\n{cfg}: LR-QAT peak RSS is {100*mem[(cfg, 'lrqat')]/mem[(cfg, 'qat')]:.0f}% of full QAT's.", end="")
    print()
