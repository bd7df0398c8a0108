#!/usr/bin/env python3
"""The W4A4 table of docs/results.md (w4a4-MODEL), regenerated from
nothing: for each seed, a full-precision model trained from scratch and
every recipe built on it (RTN, GPTQ, Hadamard + RTN/GPTQ, QAT, Hadamard +
QAT, the activation-regularization recipe from scratch with RTN/GPTQ
weights), each against its same-seed control.

    w4a4.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR] [--prune]
    w4a4.py render MODEL [--seeds 1,2,3] [--smoke] [--root DIR]

Units, result files, resumption and borrowing: tools/results/units.py
(w4a4-tiny takes its base models and FP fine-tunes from qat-tiny when
that table ran first at the same commit). `render` prints the section: per
row the mean and standard deviation over seeds, the paired difference to
the control with its 95% t interval, the share of RTN's degradation
removed, and every unit's commit and hash. Its sentences are built from
the numbers."""
import math
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stats  # noqa: E402
import units  # noqa: E402
from units import fmt, pct, pm  # noqa: E402

NAME = "w4a4"

# A model: its dataset, evaluation window and the configs of the four
# trainings (their data.dir, train.seed and init_from are the table's).
# Adding a model is one entry here.
MODELS = {
    "tiny": dict(
        data="sotu", seq=128,
        base="configs/tiny.yaml",                    # the FP model from scratch: control of the PTQ rows
        fp_control="configs/llama-fp-control.yaml",  # FP fine-tune from it: control of the QAT rows
        qat="configs/llama-w4a4.yaml",               # QAT fine-tune from it, the same steps and batches
        actreg="configs/tiny-w4a4-actreg.yaml",      # the activation-regularization recipe from scratch
    ),
    # nano: 1.4M parameters trained on 5 tokens per non-embedding parameter,
    # where W4A4 round-to-nearest costs over 10% perplexity (configs/nano.yaml)
    "nano": dict(
        data="sotu", seq=128,
        base="configs/nano.yaml",
        fp_control="configs/nano-fp-control.yaml",
        qat="configs/nano-w4a4.yaml",
        actreg="configs/nano-w4a4-actreg.yaml",
    ),
}

PRESET = "w4a4"


def _ptq(*args):
    return list(args) + ["--preset", PRESET]


def rows(model):
    """control: the row a row is paired with and its KL reference (same
    seed); rtn: the RTN row whose degradation a recipe's share divides, on
    the rows whose share the table reports."""
    out = [
        dict(id="fp", label="FP, trained from scratch", train=("base", [])),
        dict(id="rtn", label="RTN (qat eval --preset w4a4)", control="fp", eval_of="fp", preset=PRESET),
        dict(id="gptq", label="GPTQ", control="fp", rtn="rtn", ptq=_ptq("--method", "gptq", "--model", "{dep:fp}")),
        dict(id="had-rtn", label="Hadamard + RTN", control="fp", rtn="rtn",
             ptq=_ptq("--rotate", "hadamard", "--rotate-seed", "{seed}", "--method", "rtn", "--model", "{dep:fp}")),
        dict(id="had-gptq", label="Hadamard + GPTQ", control="fp", rtn="rtn",
             ptq=_ptq("--rotate", "hadamard", "--rotate-seed", "{seed}", "--method", "gptq", "--model", "{dep:fp}")),
        dict(id="ft-fp", label="FP fine-tune (control of the QAT rows)", control="fp",
             train=("fp_control", ["init_from={dep:fp}"])),
        dict(id="qat", label="QAT (LSQ weights, per-token minmax inputs)", control="ft-fp", rtn="rtn",
             train=("qat", ["init_from={dep:fp}"])),
        # quant.rotate takes its signs from train.seed, as --rotate-seed above
        dict(id="had-qat", label="Hadamard + QAT", control="ft-fp", rtn="rtn",
             train=("qat", ["init_from={dep:fp}", "quant.rotate=hadamard"])),
        dict(id="actreg", label="clip + output kurtosis from scratch, FP weights", control="fp",
             train=("actreg", [])),
        dict(id="actreg-rtn", label="clip + output kurtosis, RTN weights", control="fp", rtn="rtn",
             ptq=_ptq("--keep-activations", "--method", "rtn", "--model", "{dep:actreg}")),
        dict(id="actreg-gptq", label="clip + output kurtosis, GPTQ weights", control="fp", rtn="rtn",
             ptq=_ptq("--keep-activations", "--method", "gptq", "--model", "{dep:actreg}")),
    ]
    for r in out:
        if r.get("control"):
            r.update(kl=r["control"], pair=r["control"])
    return out


def render(v):
    """The markdown section of the table."""
    loss = lambda rid: v.metric(rid, "val_loss")
    out = []
    P = out.append
    P(f"## W4A4 on {v.model}: {len(v.seeds)} seeds, paired against same-seed controls{v.smoke_note()}\n")
    P(f"Reproduce: `{v.command}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/w4a4.py). Seeds {', '.join(map(str, v.seeds))} set initialisation and data order "
      f"(`train.seed`), the calibration batches of PTQ and the Hadamard rotation. "
      + v.held_out()
      + "KL divergence and top-1 agreement are from each row's control (same seed).\n")
    if not v.by:
        P(f"No unit of this table has finished: run `{v.command}`.\n")
    P("| row | control | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | KL from control | top-1 vs control | train tokens/s |")
    P("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in v.rows:
        rid = row["id"]
        P(f"| {row['label']} | {row.get('control') or '-'} | {v.count(rid)} | {pm(*v.mean_sd(rid, 'val_loss'), '.4f')} | "
          f"{pm(*v.mean_sd(rid, 'perplexity'), '.2f')} | {fmt(v.mean_sd(rid, 'kl_mean')[0], '.5f')} | "
          f"{fmt(v.mean_sd(rid, 'top1', 100)[0], '.2f')}{'%' if v.metric(rid, 'top1') else ''} | "
          f"{fmt(v.mean_sd(rid, 'tokens_per_s')[0], '.0f')} |")
    P("")
    P("Paired difference of val loss to the control, over the seeds both have; 95% Student-t interval. "
      "Share of RTN's degradation removed, per seed: 1 - (L_row - L_control) / (L_RTN - L_FP), "
      "its mean and 95% interval; the goal is at least 60% with an interval that excludes 0.\n")
    P("| row | control | pairs | Δ val loss (nats) | 95% interval | verdict | share of RTN's loss removed | 95% interval | goal |")
    P("|---|---|---:|---:|---:|---|---:|---:|---|")
    # the shares divide by RTN's degradation: they mean something only
    # where that degradation is measurable (its interval above 0)
    rtn_fp = v.paired("rtn", "fp")
    rtn_measurable = rtn_fp[2] is not None and rtn_fp[2] > 0
    sentences, goal_rows, share_rows, judged, undefined_seeds = [], [], 0, 0, set()
    for row in v.rows:
        if not row.get("control"):
            continue
        pseeds, m, lo, hi = v.paired(row["id"], row["control"])
        verdict = units.verdict_cell(pseeds, m, lo, hi, "lower loss than the control", "higher loss than the control")
        cells = [row["label"], row["control"], str(len(pseeds)), fmt(m, "+.4f"),
                 f"{lo:+.4f} to {hi:+.4f}" if lo is not None else "-", verdict]
        if row.get("rtn"):
            share_rows += 1
            sh, undefined = stats.share_removed(loss(row["id"]), loss(row["control"]), loss(row["rtn"]), loss("fp"))
            undefined_seeds |= set(undefined)
            sm, slo, shi = stats.interval(list(sh.values()))
            g = stats.meets_goal(sm, slo) if rtn_measurable else None
            judged += g is not None
            goal = {True: "met", False: "not met"}.get(g, "-" if rtn_measurable or slo is None else "n/a: RTN's loss not measurable")
            cells += [pct(sm) if sm is not None else "-", f"{pct(slo)} to {pct(shi)}" if slo is not None else "-", goal]
            if sm is not None:
                s = f"- {row['label']}: share of RTN's degradation removed {pct(sm)}"
                s += f" (95% interval {pct(slo)} to {pct(shi)}, {len(sh)} seeds)" if slo is not None else " (one seed)"
                s += f"; loss against {row['control']}: {verdict}"
                s += f" ({m:+.4f} nats, {lo:+.4f} to {hi:+.4f})." if lo is not None else f" ({m:+.4f} nats)."
                sentences.append(s)
            if g:
                goal_rows.append(row["label"])
        else:
            cells += ["", "", ""]
        P("| " + " | ".join(cells) + " |")
    P("")
    if rtn_fp[1] is not None:
        f, r = loss("fp"), loss("rtn")
        rel = [100 * (math.exp(r[s] - f[s]) - 1) for s in rtn_fp[0]]
        s = f"- RTN changes the held-out loss by {rtn_fp[1]:+.4f} nats from FP"
        s += f" (95% interval {rtn_fp[2]:+.4f} to {rtn_fp[3]:+.4f}: " + stats.verdict(*rtn_fp[1:], lower="a measurable fall", higher="a measurable rise") + ")" \
            if rtn_fp[2] is not None else ""
        s += f", perplexity by {statistics.mean(rel):+.1f}% on average over {len(rel)} seed{'s' if len(rel) > 1 else ''}."
        P(s)
    out.extend(sentences)
    if undefined_seeds:
        P(f"- Seed{'s' if len(undefined_seeds) > 1 else ''} {', '.join(map(str, sorted(undefined_seeds)))}: RTN does not "
          f"raise the loss over FP, so no share there.")
    if share_rows and rtn_measurable:
        P(f"- Rows meeting the goal (at least 60% of RTN's degradation removed, interval excluding 0): "
          f"{', '.join(goal_rows) if goal_rows else 'none'} ({judged} of {share_rows} recipe rows have an interval).")
    elif share_rows and rtn_fp[0]:
        P("- No row is judged against the goal: RTN's degradation has no interval above 0 here, and a share of it "
          "divides by noise.")
    # the table's unrun note is above, not among the notes
    out.extend(v.notes(unrun=False))
    if out[-1] != "":
        P("")
    out.extend(v.provenance("tools/results/w4a4.py"))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(units.main(sys.modules[__name__], sys.argv[1:]))
