#!/usr/bin/env python3
"""The sweep's results as markdown (docs/scaling.md): one row per (N, D)
with the full-precision held-out loss and each group size's delta, from
RESULTS/*/result.json; then the fit's output (RESULTS/fit.txt)."""
import glob, json, os, sys

res = sys.argv[1] if len(sys.argv) > 1 else "runs/sweep-tiny"
rows = [json.load(open(f)) for f in glob.glob(os.path.join(res, "*", "result.json"))]
by = {r["id"]: r for r in rows}
groups = sorted({r.get("group_name", "") for r in rows if r["kind"] == "qat"}, key=lambda g: (g == "channel", int(g) if g.isdigit() else 0))
print("| model | N (non-embedding) | D (tokens) | seed | FP held-out loss | " + " | ".join(f"delta G={g}" for g in groups) + " | wall (s) |")
print("|---|---|---|---|---|" + "---|" * len(groups) + "---|")
fps = sorted((r for r in rows if r["kind"] == "fp"), key=lambda r: (r["n"], r["d"], r["seed"]))
for fp in fps:
    cells, wall = [], fp["wall_s"]
    for g in groups:
        q = [r for r in rows if r["kind"] == "qat" and r.get("pair") == fp["id"] and r.get("group_name") == g]
        if not q:
            cells.append("")
            continue
        q = q[0]
        wall += q["wall_s"]
        if q["status"] != "ok" or fp["status"] != "ok":
            cells.append(q["status"])
        else:
            cells.append(f"{q['val_loss'] - fp['val_loss']:+.4f}")
    fl = f"{fp['val_loss']:.4f}" if fp["status"] == "ok" else fp["status"]
    print(f"| {fp['model']} | {fp['n']/1e6:.2f}M | {fp['d']/1e6:.2f}M | {fp['seed']} | {fl} | " + " | ".join(cells) + f" | {wall:.0f} |")
tot = sum(r["wall_s"] for r in rows)
print(f"\n{len(rows)} runs ({sum(r['kind'] == 'qat' for r in rows)} QAT, {sum(r['kind'] == 'fp' for r in rows)} full precision), "
      f"{sum(r['status'] == 'ok' for r in rows)} ok; {tot/60:.1f} minutes of training and evaluation in all.")
