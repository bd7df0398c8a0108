#!/usr/bin/env python3
"""The post-training table of docs/results.md (ptq-MODEL), regenerated
from nothing: for each seed, a full-precision model trained from scratch
(train.seed = the seed), quantized by RTN, GPTQ, QQQ, GWQ and GWQ over
GPTQ at each grid (qat ptq, calibration batches drawn with the seed), and
QAT fine-tunes started from RTN and from the post-training methods
(quant.init) beside an FP fine-tune with the same steps (the control).

    ptq.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR] [--prune]
    ptq.py render MODEL [--seeds 1,2,3] [--smoke] [--root DIR]

Units, result files, resumption and borrowing: tools/results/units.py.
`render` prints the section: per row mean and standard deviation over
seeds; each method paired against RTN at its grid (difference of held-out
loss with its 95% t interval; RTN's KL divided by the method's, as a
geometric mean over seeds with the interval of the mean log-ratio); RTN
against FP32 (also as a perplexity ratio); QAT from each start against QAT
from RTN, and QAT from RTN against the control. Its sentences are built
from the numbers."""
import math
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import units  # noqa: E402
from units import fmt, pm  # noqa: E402

NAME = "ptq"


def w(bits, granularity, group_size, **extra):
    """A weight quantizer of a rules file (quant.json's format)."""
    return dict({"format": "int", "bits": bits, "symmetric": True, "granularity": granularity, "group_size": group_size,
                 "scale": "minmax"}, **extra)


A8 = {"format": "int", "bits": 8, "symmetric": True, "granularity": "token", "scale": "minmax", "restricted": True}

# A grid: a preset (qat ptq --preset) or a rules file the unit writes.
# The tiny model's ffn width, 704, is no multiple of 128: g64 there; the
# small model's, 1376, neither: its down_proj takes groups of 32 in the
# g128 grids (per channel for QQQ-g128).
GRIDS = {
    "w4a16-g64": [{"match": "model.layers.*", "weights": w(4, "group", 64)}],
    "w3a16-g64": [{"match": "model.layers.*", "weights": w(3, "group", 64)}],
    "w4a8-qqq": "w4a8-qqq",  # int4 on [-7, 7] per channel, int8 per-token symmetric activations
    "w4a16-g128": [{"match": "model.layers.*.mlp.down_proj", "weights": w(4, "group", 32)},
                   {"match": "model.layers.*", "weights": w(4, "group", 128)}],
    "w3a16-g128": [{"match": "model.layers.*.mlp.down_proj", "weights": w(3, "group", 32)},
                   {"match": "model.layers.*", "weights": w(3, "group", 128)}],
    "w4a8-qqq-g128": [{"match": "model.layers.*.mlp.down_proj", "weights": w(4, "channel", 0, restricted=True), "activations": A8},
                      {"match": "model.layers.*", "weights": w(4, "group", 128, two_level=True), "activations": A8}],
}

METHODS = {  # qat ptq flags
    "rtn": ["--method", "rtn"],
    "gptq": ["--method", "gptq"],
    "qqq": ["--method", "qqq"],
    "gwq": ["--method", "gwq"],
    "gwq+gptq": ["--method", "gwq", "--gwq-base", "gptq"],
}

# A model: its dataset and window, the FP32 base (config and --set), the FP
# fine-tune that controls the QAT rows, the methods at each grid, and the
# QAT fine-tunes (config, --set, the starts). Adding a model is one entry.
MODELS = {
    "tiny": dict(
        data="sotu", seq=128,
        base="configs/tiny.yaml", base_sets=[],
        control="configs/llama-fp-control.yaml", control_sets=[],
        grids={"w4a16-g64": ["rtn", "gptq", "gwq", "gwq+gptq"],
               "w4a8-qqq": ["rtn", "gptq", "qqq", "gwq", "gwq+gptq"],
               "w3a16-g64": ["rtn", "gptq", "gwq", "gwq+gptq"]},
        qat={"w4a8-qqq": ("configs/llama-w4a8.yaml", ["quant.preset=w4a8-qqq", "quant.calib_batches=16"], ["rtn", "gptq", "qqq"])},
        about="The tiny model: 4.2M parameters, 1800 steps of 8 x 128 tokens. g64 rather than g128: its ffn width, 704, "
              "is no multiple of 128. QAT: 300 steps of configs/llama-w4a8.yaml at QQQ's grid "
              "(`quant.preset=w4a8-qqq`), started from RTN or from a post-training method's scales (`quant.init`); "
              "the control is configs/llama-fp-control.yaml, the same steps in full precision.",
    ),
    # 29.5M parameters, 1500 steps of 8 x 256 tokens (1.5 epochs of the
    # training split, about an hour per seed on 2 cores); evaluated on the
    # first 16 batches of 8 x 256 tokens of the validation split. The
    # control: 60 steps of small-w4a8-qat.yaml without its preset (the
    # three QAT configs share steps, learning rate and batches). A smoke
    # run shrinks the model (the QQQ search alone takes 40 s a unit at
    # full size): it proves the commands, not the sizes.
    "small": dict(
        data="sotu-8k", seq=256, eval_flags=["--batches", "16"],
        base="configs/small.yaml", base_sets=["train.steps=1500"],
        control="configs/small-w4a8-qat.yaml", control_sets=["quant.preset="],
        grids={"w4a16-g128": ["rtn", "gptq", "gwq", "gwq+gptq"],
               "w4a8-qqq": ["rtn", "gptq", "qqq", "gwq"],
               "w4a8-qqq-g128": ["rtn", "qqq"],
               "w3a16-g128": ["rtn", "gptq", "gwq"]},
        qat={"w4a8-qqq": ("configs/small-w4a8-qat.yaml", [], ["rtn", "gptq", "qqq", "gwq"]),
             "w4a16-g128": ("configs/small-w4a16-g128-qat.yaml", [], ["rtn", "gptq", "gwq"]),
             "w3a16-g128": ("configs/small-w3a16-g128-qat.yaml", [], ["rtn", "gptq", "gwq"])},
        smoke_sets=["model.dim=128", "model.layers=2", "model.heads=2", "model.kv_heads=2", "model.ffn_hidden=256"],
        about="The small model: 29.5M parameters, 1500 steps of 8 x 256 tokens (3.1M tokens, 1.5 epochs of the training "
              "split; about an hour per seed on 2 cores), vocabulary 8192; held out: the first 16 batches of 8 x 256 "
              "tokens of the validation split, the same for every row. The g128 grids put groups of 32 on down_proj, "
              "whose 1376 inputs are no multiple of 128 (per channel for QQQ-g128; its other linears take int4 g128 "
              "folded into int8 per channel). QAT: 60 steps (8 x 256 tokens, lr 5e-5 cosine to 5e-6) from each start "
              "(configs/small-w4a8-qat.yaml, small-w4a16-g128-qat.yaml, small-w3a16-g128-qat.yaml with `quant.init`); "
              "the control is small-w4a8-qat.yaml without its preset, the same steps in full precision.",
    ),
}


def slug(method):
    return method.replace("+", "-")


def rows(model):
    """pair: the row a paired difference is taken against; ratio: whether
    the table gives RTN's KL divided by the row's."""
    ms = MODELS[model]
    out = [
        dict(id="fp", label="FP32, trained from scratch", train=(ms["base"], ms["base_sets"]), kind="fp"),
        dict(id="ft-fp", label="FP32 control fine-tune", train=(ms["control"], ms["control_sets"] + ["init_from={dep:fp}"]),
             kl="fp", kind="ft", pair="fp"),
    ]
    for grid, methods in ms["grids"].items():
        g = GRIDS[grid]
        what = ["--preset", g] if isinstance(g, str) else ["--rules", "{file:rules.json}"]
        for m in methods:
            row = dict(id=f"{slug(m)}-{grid}", label=f"{m} {grid}", method=m, grid=grid, kind="ptq",
                       ptq=METHODS[m] + what + ["--model", "{dep:fp}"], kl="fp",
                       pair="fp" if m == "rtn" else f"rtn-{grid}", ratio=m != "rtn")
            if not isinstance(g, str):
                row["gen"] = {"rules.json": g}
            out.append(row)
    for grid, (cfg, sets, starts) in ms["qat"].items():
        for start in starts:
            out.append(dict(id=f"qat-{slug(start)}-{grid}", label=f"QAT from {start} {grid}", method=start, grid=grid,
                            kind="qat", train=(cfg, sets + [f"quant.init={start}", "init_from={dep:fp}"]), kl="ft-fp",
                            pair="ft-fp" if start == "rtn" else f"qat-rtn-{grid}", ratio=start != "rtn",
                            smoke_sets=["quant.calib_batches=1"]))
    return out


def interval_text(lo, hi, spec):
    return f"{format(lo, spec)} to {format(hi, spec)}" if lo is not None else "-"


def render(v):
    ms = MODELS[v.model]
    out = []
    P = out.append
    P(f"## Post-training methods and QAT starts on {v.model}: {len(v.seeds)} seeds, paired against RTN{v.smoke_note()}\n")
    P(f"Reproduce: `{v.command}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/ptq.py). Seeds {', '.join(map(str, v.seeds))} set initialisation and data order of the "
      f"FP32 model ({ms['base']}{', ' + ', '.join(ms['base_sets']) if ms['base_sets'] else ''}), the calibration batches "
      "(16 batches of the training split) and the data order of the fine-tunes. "
      + ms["about"] + " "
      + v.held_out()
      + "KL divergence of the post-training rows from FP32, of the QAT rows from the control (the FP fine-tune with "
      "their steps). GWQ keeps 1% of each weight in fp16 (about 0.2 more bits per weight) and rounds the rest to nearest "
      "(gwq) or with GPTQ (gwq+gptq). W4A8 is QQQ's grid. Peak RSS is a measurement of one process on a shared machine, "
      "not a comparison.\n")
    P("| row | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | perplexity / FP32 or control (paired) | 95% interval | "
      "KL from reference (mean ± sd) | top-1 vs reference (%) | peak RSS (MiB, measured) |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in v.rows:
        rid = row["id"]
        rss = v.mean_sd(rid, "ptq_peak_rss_mib")[0]
        # the perplexity ratio to the row's full-precision reference: exp
        # of the paired loss difference (what papers quote against FP16)
        ref = {"ptq": "fp", "qat": "ft-fp"}.get(row["kind"])
        _, m, lo, hi = v.paired(rid, ref) if ref else ([], None, None, None)
        ex = lambda x: None if x is None else math.exp(x)
        P(f"| {row['label']} | {v.count(rid)} | {pm(*v.mean_sd(rid, 'val_loss'), '.4f')} | {pm(*v.mean_sd(rid, 'perplexity'), '.2f')} | "
          f"{fmt(ex(m), '.4f')} | {interval_text(ex(lo), ex(hi), '.4f')} | "
          f"{pm(*v.mean_sd(rid, 'kl_mean'), '.5f', none='-')} | {fmt(v.mean_sd(rid, 'top1', 100)[0], '.2f')} | {fmt(rss, '.0f')} |")
    P("")
    P("Paired against the reference, over the seeds both have, 95% Student-t intervals: the difference of held-out "
      "loss, the same as a perplexity ratio (exp of the difference), and the reference's KL divided by the row's "
      "(geometric mean over seeds; the interval is that of the mean log-ratio). A ratio above 1: the row is closer "
      "to its KL reference than the row it is paired with.\n")
    P("| row | paired with | pairs | Δ val loss (nats) | 95% interval | verdict | perplexity ratio | 95% interval | KL ratio (ref / row) | 95% interval | verdict |")
    P("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
    sentences = {}
    for row in v.rows:
        if not row.get("pair"):
            continue
        pseeds, m, lo, hi = v.paired(row["id"], row["pair"])
        verdict = units.verdict_cell(pseeds, m, lo, hi, "lower loss", "higher loss")
        ex = lambda x: None if x is None else math.exp(x)
        cells = [row["label"], v.label(row["pair"]), str(len(pseeds)), fmt(m, "+.4f"), interval_text(lo, hi, "+.4f"), verdict,
                 fmt(ex(m), ".4f"), interval_text(ex(lo), ex(hi), ".4f")]
        if row.get("ratio"):
            kseeds, g, glo, ghi, (lm, llo, lhi) = units.log_ratio(v.metric(row["pair"], "kl_mean"), v.metric(row["id"], "kl_mean"))
            kv = units.verdict_cell(kseeds, lm, llo, lhi, "higher KL", "lower KL")
            cells += [fmt(g, ".2f") + ("x" if g is not None else ""), interval_text(glo, ghi, ".2f"), kv]
            if g is not None:
                s = (f"{row['method']}: loss {verdict}{units.diff_text(m, lo, hi)}, KL ratio {g:.2f}x"
                     + (f" (95% interval {glo:.2f} to {ghi:.2f}): {kv}" if glo is not None else " (one seed)"))
                sentences.setdefault((row["kind"], row["grid"]), []).append(s)
        else:
            cells += ["", "", ""]
        P("| " + " | ".join(cells) + " |")
    P("")
    for (kind, grid), ss in sentences.items():
        ref = f"RTN at {grid}" if kind == "ptq" else f"QAT from RTN at {grid}"
        P(f"- {grid}{' after QAT' if kind == 'qat' else ''}, against {ref}: " + "; ".join(ss) + ".")
    if sentences:
        P("")
    out.extend(v.footer("tools/results/ptq.py"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(units.main(sys.modules[__name__], sys.argv[1:]))
