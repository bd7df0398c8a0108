#!/usr/bin/env python3
"""The optimizer-states table of docs/results.md (states-MODEL),
regenerated from nothing: for each seed, the model trained from scratch
for 600 steps with fp32, int8 and fp8 AdamW moments (train.seed = the
seed), and the W4A4 QAT fine-tune (configs/llama-w4a4.yaml) with each from
that seed's full-precision model; then the peak RSS of a few training
steps of the small config with each, measured once.

    states.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR] [--prune]
    states.py render MODEL [--seeds 1,2,3] [--smoke] [--root DIR]

Units, result files, resumption and borrowing: tools/results/units.py.
`render` prints the section: per row mean and standard deviation over
seeds; int8 and fp8 paired against fp32 (difference of held-out loss with
its 95% t interval); the optimizer's bytes per parameter from the training
log (deterministic); the peak RSS as a measurement. Its sentences are built
from the numbers."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import units  # noqa: E402
from units import fmt, pm  # noqa: E402

NAME = "states"
STATES = ["fp32", "int8", "fp8"]

MODELS = {
    "tiny": dict(data="sotu", seq=128, base="configs/tiny.yaml", w4a4="configs/llama-w4a4.yaml", rss="configs/small.yaml"),
}
# a smoke run measures a one-layer model of the small config's vocabulary:
# it proves the commands, not the memory
SHRINK = ["model.dim=64", "model.layers=1", "model.heads=2", "model.kv_heads=2", "model.ffn_hidden=128"]


def rows(model):
    out = [dict(id="fp", label="FP32 model (fp32 states), the start of the W4A4 fine-tunes", train=("base", []))]
    for s in STATES:
        out.append(dict(id=f"w4a4-{s}", label=f"W4A4 QAT fine-tune, {s} states", state=s, run="w4a4",
                        train=("w4a4", ["init_from={dep:fp}", f"optimizer.state={s}"]),
                        pair=None if s == "fp32" else "w4a4-fp32"))
    for s in STATES:
        out.append(dict(id=f"scratch-{s}", label=f"from scratch, 600 steps, {s} states", state=s, run="scratch",
                        train=("base", ["train.steps=600", "train.eval_every=0", f"optimizer.state={s}"]),
                        pair=None if s == "fp32" else "scratch-fp32"))
    for s in STATES:
        out.append(dict(id=f"rss-{s}", label=f"small config, 3 steps, {s} states", state=s, once=True, measure=True,
                        data="sotu-8k", train=("rss", ["train.steps=3", "train.ckpt_every=0", "train.eval_every=0",
                                                       f"optimizer.state={s}"]),
                        smoke_sets=SHRINK))
    return out


def render(v):
    out = []
    P = out.append
    P(f"## Optimizer states on {v.model}: fp32, int8 and fp8 AdamW moments, {len(v.seeds)} seeds, paired against fp32{v.smoke_note()}\n")
    P(f"Reproduce: `{v.command}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/states.py). Seeds {', '.join(map(str, v.seeds))} set initialisation and data order "
      "(`train.seed`). Scratch: configs/tiny.yaml trained for 600 steps; W4A4: the QAT fine-tune of "
      "configs/llama-w4a4.yaml from the seed's FP32 model (configs/tiny.yaml). Only the storage of the optimizer's "
      "moments differs between the rows of a run. "
      + v.held_out()
      + "Bytes per parameter are the training log's (deterministic): they include the tensors that keep fp32 moments "
      "(norms, tensors under 4096 values).\n")
    P("| row | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | optimizer bytes per parameter |")
    P("|---|---:|---:|---:|---:|")
    main = [r for r in v.rows if not r.get("measure")]
    for row in main:
        rid = row["id"]
        bpp = sorted(set(v.metric(rid, "optimizer_bytes_per_param").values()))
        P(f"| {row['label']} | {v.count(rid)} | {pm(*v.mean_sd(rid, 'val_loss'), '.4f')} | {pm(*v.mean_sd(rid, 'perplexity'), '.2f')} | "
          f"{' / '.join(f'{b:.2f}' for b in bpp) or '-'} |")
    P("")
    P("Paired against the same run with fp32 states, over the seeds both have; 95% Student-t interval.\n")
    P("| row | paired with | pairs | Δ val loss (nats) | 95% interval | verdict | relative (mean) |")
    P("|---|---|---:|---:|---:|---|---:|")
    sentences = []
    for row in main:
        if not row.get("pair"):
            continue
        pseeds, m, lo, hi = v.paired(row["id"], row["pair"])
        verdict = units.verdict_cell(pseeds, m, lo, hi, "lower loss", "higher loss")
        ref = v.metric(row["pair"], "val_loss")
        rel = [100 * (v.metric(row["id"], "val_loss")[s] - ref[s]) / ref[s] for s in pseeds]
        relm = sum(rel) / len(rel) if rel else None
        P(f"| {row['label']} | {v.label(row['pair'])} | {len(pseeds)} | {fmt(m, '+.4f')} | "
          f"{f'{lo:+.4f} to {hi:+.4f}' if lo is not None else '-'} | {verdict} | {fmt(relm, '+.2f')}{'%' if rel else ''} |")
        if m is not None:
            sentences.append(f"- {row['run']}, {row['state']} against fp32: {verdict}{units.diff_text(m, lo, hi)}.")
    P("")
    out.extend(sentences)
    if sentences:
        P("")
    P(f"Peak RSS, measured once (seed {v.seeds[0]}, not a comparison): 3 training steps of configs/small.yaml with each "
      "state, the training process's maximum resident set (wait4, as `/usr/bin/time -v`), and the optimizer state "
      "the log reports.\n")
    P("| states | peak RSS (MiB) | optimizer state (MB) | bytes per parameter |")
    P("|---|---:|---:|---:|")
    for row in v.rows:
        if not row.get("measure"):
            continue
        d = v.by.get(row["id"], {})
        r = next(iter(d.values()))["metrics"] if d else {}
        P(f"| {row['state']} | {fmt(r.get('train_peak_rss_mib'), '.0f', 'missing')} | {fmt(r.get('optimizer_mb'), '.1f')} | "
          f"{fmt(r.get('optimizer_bytes_per_param'), '.2f')} |")
    P("")
    out.extend(v.footer("tools/results/states.py"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(units.main(sys.modules[__name__], sys.argv[1:]))
