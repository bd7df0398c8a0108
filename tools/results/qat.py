#!/usr/bin/env python3
"""The presets table of docs/results.md (qat-MODEL), regenerated from
nothing: for each seed, a full-precision model trained from scratch
(train.seed = the seed: initialisation and data order), its
round-to-nearest quantizations at each preset (qat eval --preset), and
from it an FP fine-tune (the control) and a QAT fine-tune per preset with
the same steps, batches and seed (configs/llama-*.yaml).

    qat.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR] [--prune]
    qat.py render MODEL [--seeds 1,2,3] [--smoke] [--root DIR]

Units, result files, resumption and borrowing: tools/results/units.py.
`render` prints the section: per row mean and standard deviation over
seeds; paired differences of held-out loss (QAT against the control, RTN
against FP32) with 95% t intervals; the share of RTN's degradation QAT
removes, per seed, with its interval; KL divergence of QAT from the control
and of RTN from FP32; the per-layer input kurtosis (mean and standard
deviation over seeds). Its sentences are built from the numbers."""
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stats  # noqa: E402
import units  # noqa: E402
from units import fmt, pct, pm  # noqa: E402

NAME = "qat"
PRESETS = ["w4a16-g32", "w4a8", "w4a4", "fp8"]

# A model: its dataset, evaluation window and the configs of its runs
# (their data.dir, train.seed and init_from are the table's).
MODELS = {
    "tiny": dict(
        data="sotu", seq=128,
        base="configs/tiny.yaml",                  # FP32 from scratch
        control="configs/llama-fp-control.yaml",   # FP fine-tune: the control of the QAT rows
        kurt="configs/llama-w4a4-kurtosis.yaml",   # W4A4 QAT + kurtosis penalty on the linears' inputs
        **{f"qat-{p}": f"configs/llama-{p}.yaml" for p in PRESETS},
    ),
}


def rows(model):
    """The table's rows: pair is the row a paired difference is taken
    against, rtn the RTN row whose degradation a QAT row's share divides."""
    out = [
        dict(id="fp", label="FP32, trained from scratch", train=("base", []), kurtosis=True),
        dict(id="ft-fp", label="FP32 control fine-tune", train=("control", ["init_from={dep:fp}"]), kl="fp", pair="fp"),
    ]
    for p in PRESETS:
        out.append(dict(id=f"rtn-{p}", label=f"RTN {p}", eval_of="fp", preset=p, kl="fp", pair="fp", preset_name=p))
        out.append(dict(id=f"qat-{p}", label=f"QAT {p}", train=(f"qat-{p}", ["init_from={dep:fp}"]), kl="ft-fp",
                        pair="ft-fp", rtn=f"rtn-{p}", preset_name=p, kurtosis=p == "w4a4"))
    out.append(dict(id="qat-w4a4-kurt", label="QAT w4a4 + input kurtosis penalty", train=("kurt", ["init_from={dep:fp}"]),
                    kl="ft-fp", pair="ft-fp", rtn="rtn-w4a4", preset_name="w4a4 + input kurtosis penalty", kurtosis=True))
    return out


# the linears whose inputs the kurtosis table shows: q/k/v read one input,
# as do gate/up
KURT_INPUTS = [("self_attn.q_proj", "q/k/v"), ("self_attn.o_proj", "o"), ("mlp.gate_proj", "gate/up"), ("mlp.down_proj", "down")]
KURT_COLUMNS = [("fp", "FP32"), ("qat-w4a4", "QAT w4a4"), ("qat-w4a4-kurt", "QAT w4a4 + input kurtosis penalty")]


def render(v):
    out = []
    P = out.append
    P(f"## QAT presets on {v.model}: {len(v.seeds)} seeds, paired against same-seed controls{v.smoke_note()}\n")
    P(f"Reproduce: `{v.command}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/qat.py). Seeds {', '.join(map(str, v.seeds))} set initialisation and data order of "
      f"the FP32 model (`train.seed`, {MODELS[v.model]['base']}) and the data order of every fine-tune from it. "
      "The control is the FP32 fine-tune with the same steps, learning rate and batches as the QAT fine-tunes "
      "(configs/llama-fp-control.yaml), so extra training is not mistaken for recovery. "
      + v.held_out()
      + "Train tokens/s is a measurement on a shared machine, not a comparison.\n")
    P("| row | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | bits/byte (mean) | train tokens/s (measured) |")
    P("|---|---:|---:|---:|---:|---:|")
    for row in v.rows:
        rid = row["id"]
        P(f"| {row['label']} | {v.count(rid)} | {pm(*v.mean_sd(rid, 'val_loss'), '.4f')} | "
          f"{pm(*v.mean_sd(rid, 'perplexity'), '.2f')} | {fmt(v.mean_sd(rid, 'bits_per_byte')[0], '.4f')} | "
          f"{fmt(v.mean_sd(rid, 'tokens_per_s')[0], '.0f')} |")
    P("")
    P("Paired difference of held-out loss to the row's reference, over the seeds both have; 95% Student-t interval. "
      "Share of RTN's degradation removed, per seed: 1 - (L_QAT - L_control) / (L_RTN - L_FP32), its mean and 95% "
      "interval.\n")
    P("| row | reference | pairs | Δ val loss (nats) | 95% interval | verdict | share of RTN's loss removed | 95% interval |")
    P("|---|---|---:|---:|---:|---|---:|---:|")
    loss = lambda rid: v.metric(rid, "val_loss")
    sentences = []
    for row in v.rows:
        if not row.get("pair"):
            continue
        pseeds, m, lo, hi = v.paired(row["id"], row["pair"])
        verdict = units.verdict_cell(pseeds, m, lo, hi, "lower loss", "higher loss")
        cells = [row["label"], v.label(row["pair"]), str(len(pseeds)), fmt(m, "+.4f"),
                 f"{lo:+.4f} to {hi:+.4f}" if lo is not None else "-", verdict]
        if row.get("rtn"):
            sh, undefined = stats.share_removed(loss(row["id"]), loss(row["pair"]), loss(row["rtn"]), loss("fp"))
            sm, slo, shi = stats.interval([sh[s] for s in sorted(sh)])
            cells += [pct(sm) if sm is not None else "-", f"{pct(slo)} to {pct(shi)}" if slo is not None else "-"]
            rs, rm, rlo, rhi = v.paired(row["rtn"], "fp")
            s = (f"- {row['preset_name']}: RTN against FP32 " + units.verdict_cell(rs, rm, rlo, rhi, "lower loss", "higher loss")
                 + units.diff_text(rm, rlo, rhi) + "; QAT against the control " + verdict + units.diff_text(m, lo, hi))
            if sm is not None:
                s += f"; share of RTN's degradation removed {pct(sm)}"
                s += f" (95% interval {pct(slo)} to {pct(shi)}, {len(sh)} seeds)" if slo is not None else " (one seed)"
            if rlo is not None and rlo <= 0:
                s += "; RTN's degradation has no interval above 0 here, so the share divides by noise"
            if undefined:
                s += f"; seed{'s' if len(undefined) > 1 else ''} {', '.join(map(str, undefined))}: RTN does not raise the loss, no share"
            sentences.append(s + ".")
        else:
            cells += ["", ""]
        P("| " + " | ".join(cells) + " |")
    P("")
    out.extend(sentences)
    if sentences:
        P("")
    P("KL divergence of next-token distributions on the held-out split (mean ± sd over seeds): RTN from FP32, QAT "
      "from the control (what quantization costs, without the drift of fine-tuning), and the control from FP32 "
      "(that drift).\n")
    P("| preset | RTN mean KL (vs FP32) | QAT mean KL (vs control) | RTN top-1 (vs FP32) | QAT top-1 (vs control) |")
    P("|---|---:|---:|---:|---:|")
    for row in v.rows:
        if not row.get("rtn"):
            continue
        r, q = row["rtn"], row["id"]
        P(f"| {row['preset_name']} | {pm(*v.mean_sd(r, 'kl_mean'), '.5f')} | {pm(*v.mean_sd(q, 'kl_mean'), '.5f')} | "
          f"{pm(*v.mean_sd(r, 'top1', 100), '.2f')} | {pm(*v.mean_sd(q, 'top1', 100), '.2f')} |")
    P(f"| control fine-tune (vs FP32) | | {pm(*v.mean_sd('ft-fp', 'kl_mean'), '.5f')} | | "
      f"{pm(*v.mean_sd('ft-fp', 'top1', 100), '.2f')} |")
    P("")
    P(f"Linear-input kurtosis (`qat eval --kurtosis`: each linear's input, mean over tokens), mean ± sd over seeds; "
      "descriptive, no comparison.\n")
    P("| layer input | " + " | ".join(c for _, c in KURT_COLUMNS) + " |")
    P("|---|" + "---:|" * len(KURT_COLUMNS))
    kurt = {rid: {s: r["metrics"]["kurtosis"] for s, r in v.by.get(rid, {}).items() if "kurtosis" in r["metrics"]}
            for rid, _ in KURT_COLUMNS}
    # the layers of the model's config: every row shows before any unit ran
    layers = range(units.config_int(MODELS[v.model]["base"], "model", "layers"))
    for suffix, what in KURT_INPUTS:
        for layer in layers:
            name = f"model.layers.{layer}.{suffix}"
            cells = [pm(*stats.mean_sd([k[name] for _, k in sorted(kurt[rid].items()) if name in k]), ".2f")
                     for rid, _ in KURT_COLUMNS]
            P(f"| layer {layer} {suffix} ({what}) | " + " | ".join(cells) + " |")
    means = [pm(*stats.mean_sd([statistics.mean(k.values()) for _, k in sorted(kurt[rid].items()) if k]), ".2f")
             for rid, _ in KURT_COLUMNS]
    P("| **mean over all linears** | " + " | ".join(means) + " |")
    P("")
    out.extend(v.footer("tools/results/qat.py"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(units.main(sys.modules[__name__], sys.argv[1:]))
