#!/usr/bin/env python3
"""The LR-QAT table of docs/results.md (lrqat-MODEL), regenerated from
nothing: for each seed, a full-precision model trained from scratch
(train.seed = the seed), and from it full QAT (LSQ steps), LoRA-QAT and
LR-QAT at W4 per channel and W4 g64 with the same steps, batches and seed,
beside RTN at those grids and an FP fine-tune (the control). Then two
measurements, each run once (first seed): peak memory of 10 training steps
of full QAT and LR-QAT from a random start at the base and small configs,
and the step time of the three W4 per-channel methods.

    lrqat.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR] [--prune]
    lrqat.py render MODEL [--seeds 1,2,3] [--smoke] [--root DIR]

Units, result files, resumption and borrowing: tools/results/units.py.
`render` prints the section: per row mean and standard deviation over
seeds; LoRA-QAT, LR-QAT and RTN paired against full QAT at their grid, and
full QAT against the control (difference of held-out loss with its 95% t
interval, and the same as a perplexity ratio); the measurements as
measurements. Its sentences are built from the numbers."""
import math
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import units  # noqa: E402
from units import fmt, pm  # noqa: E402

NAME = "lrqat"

# the W4 per-channel configs; g64 is each with its rules' granularity
# replaced (the tiny model's ffn width, 704, is no multiple of 128)
CONFIGS = {"qat": "configs/llama-w4-qat.yaml", "loraqat": "configs/llama-w4-loraqat.yaml", "lrqat": "configs/llama-w4-lrqat.yaml"}
METHOD_LABEL = {"qat": "full QAT (LSQ)", "loraqat": "LoRA-QAT", "lrqat": "LR-QAT", "rtn": "RTN"}
GRANULARITY = {
    "channel": {"granularity": "channel"},
    "g64": {"granularity": "group", "group_size": 64},
}
G64_YAML = [["granularity: channel", "granularity: group, group_size: 64"]]

MODELS = {
    "tiny": dict(data="sotu", seq=128, base="configs/tiny.yaml", control="configs/llama-fp-control.yaml"),
}

# the memory rows: 10 steps from a random start at W4 per channel, the
# quantizers appended to a config that has none
MEM_QUANT = {
    "qat": 'quant:\n  rules:\n    - match: "model.layers.*"\n'
           "      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: lsq}\n",
    "lrqat": 'quant:\n  rules:\n    - match: "model.layers.*"\n'
             "      weights: {format: int, bits: 4, symmetric: true, granularity: channel, scale: minmax}\n"
             "lora:\n  method: lr-qat\n  rank: 32\n  alpha: 32\n",
}
MEM_CONFIGS = [("base", "configs/base.yaml", 1), ("small", "configs/small.yaml", 8)]
# a smoke run measures a one-layer model of the same vocabulary: it proves
# the commands, not the memory
SHRINK = ["model.dim=64", "model.layers=1", "model.heads=2", "model.kv_heads=2", "model.ffn_hidden=128"]


def rows(model):
    out = [
        dict(id="fp", label="FP32, trained from scratch", train=("base", [])),
        dict(id="ft-fp", label="FP32 control fine-tune", train=("control", ["init_from={dep:fp}"]), kl="fp", pair="fp"),
    ]
    for g, gran in GRANULARITY.items():
        rules = [{"match": "model.layers.*", "weights": dict({"format": "int", "bits": 4, "symmetric": True}, **gran, scale="minmax")}]
        out.append(dict(id=f"rtn-{g}", label=f"RTN W4 {g}", method="rtn", grid=g, gen={"rules.json": rules},
                        ptq=["--method", "rtn", "--rules", "{file:rules.json}", "--model", "{dep:fp}"], kl="fp",
                        pair=f"qat-{g}"))
        for m, cfg in CONFIGS.items():
            row = dict(id=f"{m}-{g}", label=f"{METHOD_LABEL[m]} W4 {g}", method=m, grid=g, train=(cfg, ["init_from={dep:fp}"]),
                       kl="ft-fp", pair="ft-fp" if m == "qat" else f"qat-{g}")
            if g == "g64":
                row["derive"] = {"replace": G64_YAML}
            out.append(row)
    for name, cfg, batch in MEM_CONFIGS:
        for m in ("qat", "lrqat"):
            out.append(dict(id=f"mem-{name}-{m}", label=f"{name} {METHOD_LABEL[m]}", method=m, config=name, batch=batch,
                            once=True, measure=True, data="sotu-8k", derive={"append": MEM_QUANT[m]},
                            train=(cfg, ["train.steps=10", f"train.batch={batch}", "train.eval_every=0", "train.eval_batches=1",
                                         "train.ckpt_every=0", "train.log_every=1"]),
                            smoke_sets=SHRINK))
    for m, cfg in CONFIGS.items():
        out.append(dict(id=f"speed-{m}", label=f"{METHOD_LABEL[m]} W4 channel, 40 steps", method=m, once=True, measure=True,
                        train=(cfg, ["init_from={dep:fp}", "train.steps=40", "train.eval_every=0", "train.eval_batches=1",
                                     "train.log_every=10"])))
    return out


def interval_text(lo, hi, spec):
    return f"{format(lo, spec)} to {format(hi, spec)}" if lo is not None else "-"


def first(v, rid, key):
    """A deterministic fact of a row (the same for every seed): its value,
    or "differs" when the seeds disagree."""
    vals = set(v.metric(rid, key).values())
    if not vals:
        return "-"
    return f"{vals.pop():,}" if len(vals) == 1 else "differs by seed"


def render(v):
    out = []
    P = out.append
    P(f"## LR-QAT, LoRA-QAT and full QAT at W4 on {v.model}: {len(v.seeds)} seeds, paired against full QAT{v.smoke_note()}\n")
    P(f"Reproduce: `{v.command}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/lrqat.py). Seeds {', '.join(map(str, v.seeds))} set initialisation and data order of "
      "the FP32 model (`train.seed`) and the data order of every fine-tune from it. Weights only, 4-bit symmetric "
      "int (minmax `s0`): full QAT trains every weight with LSQ steps (configs/llama-w4-qat.yaml), LoRA-QAT and LR-QAT "
      "train rank-32 adapters (configs/llama-w4-loraqat.yaml, llama-w4-lrqat.yaml); g64 is each config with its "
      "granularity replaced. The control is the FP32 fine-tune with the same steps (configs/llama-fp-control.yaml). "
      + v.held_out()
      + "Peak RSS (of runs not resumed) is a measurement on a shared machine, not a comparison.\n")
    P("| row | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | KL from reference (mean ± sd) | trainable params | peak RSS (MiB, measured) |")
    P("|---|---:|---:|---:|---:|---:|---:|")
    main = [r for r in v.rows if not r.get("measure")]
    for row in main:
        rid = row["id"]
        P(f"| {row['label']} | {v.count(rid)} | {pm(*v.mean_sd(rid, 'val_loss'), '.4f')} | {pm(*v.mean_sd(rid, 'perplexity'), '.2f')} | "
          f"{pm(*v.mean_sd(rid, 'kl_mean'), '.5f', none='-')} | {first(v, rid, 'trainable_params')} | "
          f"{fmt(v.mean_sd(rid, 'train_peak_rss_mib')[0], '.0f')} |")
    P("")
    P("Paired against the reference, over the seeds both have, 95% Student-t intervals: the difference of held-out "
      "loss and the same as a change of perplexity (exp of the difference, minus 1).\n")
    P("| row | paired with | pairs | Δ val loss (nats) | 95% interval | verdict | perplexity change | 95% interval |")
    P("|---|---|---:|---:|---:|---|---:|---:|")
    sentences = {}
    for row in main:
        if not row.get("pair"):
            continue
        pseeds, m, lo, hi = v.paired(row["id"], row["pair"])
        verdict = units.verdict_cell(pseeds, m, lo, hi, "lower loss", "higher loss")
        ch = lambda x: None if x is None else 100 * (math.exp(x) - 1)
        P(f"| {row['label']} | {v.label(row['pair'])} | {len(pseeds)} | {fmt(m, '+.4f')} | {interval_text(lo, hi, '+.4f')} | "
          f"{verdict} | {fmt(ch(m), '+.2f')}{'%' if m is not None else ''} | "
          f"{interval_text(ch(lo), ch(hi), '+.2f') + ('%' if lo is not None else '')} |")
        if row.get("grid") and row["method"] != "qat" and m is not None:
            s = f"{METHOD_LABEL[row['method']]} {ch(m):+.2f}%" + (f" ({ch(lo):+.2f}% to {ch(hi):+.2f}%)" if lo is not None else "")
            sentences.setdefault(row["grid"], []).append(s + f": {verdict}")
    P("")
    for g, ss in sentences.items():
        P(f"- W4 {g}, perplexity against full QAT's: " + "; ".join(ss) + ".")
    if sentences:
        P("")
    mem = [r for r in v.rows if r["id"].startswith("mem-")]
    P(f"Memory, measured once (seed {v.seeds[0]}, not a comparison): 10 training steps from a random start at W4 per "
      "channel, full QAT (LSQ, fp32 AdamW moments) against LR-QAT (rank 32); peak RSS of the training process (wait4, "
      "as `/usr/bin/time -v`).\n")
    P("| config | batch | method | peak RSS (MiB) | tokens/s | trainable params |")
    P("|---|---|---|---:|---:|---:|")
    for row in mem:
        d = v.by.get(row["id"], {})
        r = next(iter(d.values()))["metrics"] if d else {}
        P(f"| {row['config']} | {row['batch']} x 256 | {METHOD_LABEL[row['method']]} | {fmt(r.get('train_peak_rss_mib'), '.0f', 'missing')} | "
          f"{fmt(r.get('tokens_per_s'), '.0f')} | {fmt(r.get('trainable_params'), ',')} |")
    P("")
    for name, _, _ in MEM_CONFIGS:
        q, lr = (v.metric(f"mem-{name}-{m}", "train_peak_rss_mib") for m in ("qat", "lrqat"))
        if q and lr:
            P(f"- {name}: LR-QAT's peak RSS is {100 * next(iter(lr.values())) / next(iter(q.values())):.0f}% of full QAT's "
              "(one measurement each).")
    speed = [r for r in v.rows if r["id"].startswith("speed-")]
    P("")
    P(f"Step time, measured once (seed {v.seeds[0]}, not a comparison): 40 steps of each W4 per-channel method from the "
      "FP32 model, median tokens/s of the logged steps past the first tenth.\n")
    P("| method | tokens/s | against full QAT |")
    P("|---|---:|---:|")
    base = v.metric("speed-qat", "tokens_per_s")
    for row in speed:
        t = v.metric(row["id"], "tokens_per_s")
        tv = next(iter(t.values())) if t else None
        ratio = tv / next(iter(base.values())) if tv and base else None
        P(f"| {METHOD_LABEL[row['method']]} | {fmt(tv, '.0f', 'missing')} | {fmt(ratio, '.2f')}{'x' if ratio else ''} |")
    P("")
    out.extend(v.footer("tools/results/lrqat.py"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(units.main(sys.modules[__name__], sys.argv[1:]))
