#!/usr/bin/env python3
"""The sweep's results as markdown (docs/scaling.md).

    scaling_md.py RESULTS [--doc FILE --section NAME]          one row per (N, D, seed)
    scaling_md.py RESULTS --fit [--doc FILE --section NAME]    the fit

The table has the full-precision held-out loss and each group size's delta,
from RESULTS/*/result.json; --fit prints the output of `qat fit` that
RESULTS/fit.txt holds (`qat fit ... | tee RESULTS/fit.txt`). With --doc the
markdown replaces the section NAME of FILE (tools/results/section.py
markers) instead of going to stdout."""
import argparse, glob, json, os, sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
import section  # noqa: E402


def table(res):
    rows = [json.load(open(f)) for f in glob.glob(os.path.join(res, "*", "result.json"))]
    if not rows:
        raise SystemExit(f"{res}: no */result.json (run the sweep first)")
    groups = sorted({r.get("group_name", "") for r in rows if r["kind"] == "qat"}, key=lambda g: (g == "channel", int(g) if g.isdigit() else 0))
    out = ["| model | N (non-embedding) | D (tokens) | seed | FP held-out loss | " + " | ".join(f"delta G={g}" for g in groups) + " | wall (s) |",
           "|---|---|---|---|---|" + "---|" * len(groups) + "---|"]
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
        out.append(f"| {fp['model']} | {fp['n']/1e6:.2f}M | {fp['d']/1e6:.2f}M | {fp['seed']} | {fl} | " + " | ".join(cells) + f" | {wall:.0f} |")
    tot = sum(r["wall_s"] for r in rows)
    out.append(f"\n{len(rows)} runs ({sum(r['kind'] == 'qat' for r in rows)} QAT, {sum(r['kind'] == 'fp' for r in rows)} full precision), "
               f"{sum(r['status'] == 'ok' for r in rows)} ok; {tot/60:.1f} minutes of training and evaluation in all.")
    return "\n".join(out) + "\n"


def fit(res):
    path = os.path.join(res, "fit.txt")
    try:
        text = open(path).read().rstrip("\n")
    except OSError as e:
        raise SystemExit(f"{path}: {e.strerror} (qat fit ... | tee {path})")
    return "```\n" + text + "\n```\n"


def main():
    ap = argparse.ArgumentParser(description="docs/scaling.md's tables from a sweep's results")
    ap.add_argument("results", nargs="?", default="runs/sweep-tiny")
    ap.add_argument("--fit", action="store_true", help="the fit (RESULTS/fit.txt) instead of the table")
    ap.add_argument("--doc", help="write into this markdown file's section instead of stdout")
    ap.add_argument("--section", help="the section of --doc")
    a = ap.parse_args()
    md = fit(a.results) if a.fit else table(a.results)
    if not a.doc:
        sys.stdout.write(md)
        return 0
    if not a.section:
        ap.error("--doc needs --section")
    cmd = f"python3 tools/scaling_md.py {a.results}" + (" --fit" if a.fit else "") + f" --doc {a.doc} --section {a.section}"
    try:
        text = section.replace(open(a.doc).read(), a.section, md, cmd)
    except (OSError, section.SectionError) as e:
        print(f"{a.doc}: {e}", file=sys.stderr)
        return 2
    section.write_atomic(a.doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
