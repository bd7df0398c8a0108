#!/usr/bin/env python3
"""The W4A4 table of docs/results.md, regenerated from nothing: for each
seed, a full-precision model trained from scratch and every recipe built on
it (RTN, GPTQ, Hadamard + RTN/GPTQ, QAT, Hadamard + QAT, the
activation-regularization recipe from scratch with RTN/GPTQ weights), each
against its same-seed control.

    w4a4.py run    MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR]
    w4a4.py render MODEL [--seeds 1,2,3] [--rows a,b] [--smoke] [--root DIR]

A unit is one (table, row, seed): a few ./bin/qat commands (train, ptq,
eval --json) whose result file, ROOT/w4a4-MODEL/ROW-sSEED.json, is written
whole (temporary file and rename) and holds the metrics, the commit (with
-dirty when tracked files have uncommitted changes) and the hash of the
unit's resolved configuration: the YAML files it reads, every flag and
--set, and the hashes of the units it starts from. The data is prepared
anew at each commit (ROOT/w4a4-MODEL/data/COMMIT). `run` skips a unit whose
result file has the current commit and hash and whose model is still on
disk; the others run in a directory named by commit and hash
(ROOT/w4a4-MODEL/runs/ROW-sSEED-KEY/), so nothing of another commit is
reused, and a killed unit resumes there (`qat train --resume` from its
last checkpoint). A failed unit leaves its row missing (and the rows built
on it); `run` goes on with the others and exits 1 at the end.

`render` prints the markdown section from the result files: per row the
mean and standard deviation over seeds, the paired difference to the
control with its 95% t interval, the share of RTN's degradation removed,
and every unit's commit and hash. Its sentences are built from the numbers.

Bad input (an unknown model or row, a malformed result file) is exit 2
naming it."""
import argparse
import fcntl
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stats  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class InputError(Exception):
    """Bad input: exit 2 with the message."""


# --- the table's specification ---------------------------------------------

# A model of the table: how its data is prepared from the addresses (qat
# data prepare flags; the table prepares it anew at each commit), the window
# length of its evaluation, and the configs of the four trainings (their
# data.dir is replaced by the table's). Adding a model is one entry here.
MODELS = {
    "tiny": dict(
        prepare=["--input", "../shared/data/sotu"],
        seq=128,
        base="configs/tiny.yaml",               # the FP model from scratch: control of the PTQ rows
        fp_control="configs/llama-fp-control.yaml",  # FP fine-tune from it: control of the QAT rows
        qat="configs/llama-w4a4.yaml",          # QAT fine-tune from it, the same steps and batches
        actreg="configs/tiny-w4a4-actreg.yaml",  # the activation-regularization recipe from scratch
    ),
    # nano: 1.4M parameters trained on 5 tokens per non-embedding parameter,
    # where W4A4 round-to-nearest costs over 10% perplexity (configs/nano.yaml)
    "nano": dict(
        prepare=["--input", "../shared/data/sotu"],
        seq=128,
        base="configs/nano.yaml",
        fp_control="configs/nano-fp-control.yaml",
        qat="configs/nano-w4a4.yaml",
        actreg="configs/nano-w4a4-actreg.yaml",
    ),
    # "NAME": dict(prepare=["--input", "../shared/data/sotu", "--vocab", "8192"], seq=..., base="configs/NAME.yaml",
    #              fp_control=..., qat=..., actreg="configs/NAME-w4a4-actreg.yaml"),
}

PRESET = "w4a4"
CALIB_BATCHES = 16


def _ptq(*args):
    return list(args) + ["--preset", PRESET]


# A row: its label, the row it is compared with (same seed), and how its
# model is made: train (a config of MODELS and --set values), ptq (flags of
# qat ptq; --model names the row it quantizes), or neither (eval of another
# row's model with --preset). share: the row is a recipe whose share of
# RTN's degradation the table reports. {seed} is the unit's seed, {dep:R}
# row R's model (same seed).
ROWS = [
    dict(id="fp", label="FP, trained from scratch", control=None, train=("base", [])),
    dict(id="rtn", label="RTN (qat eval --preset w4a4)", control="fp", eval_of="fp", preset=PRESET),
    dict(id="gptq", label="GPTQ", control="fp", share=True, ptq=_ptq("--method", "gptq", "--model", "{dep:fp}")),
    dict(id="had-rtn", label="Hadamard + RTN", control="fp", share=True,
         ptq=_ptq("--rotate", "hadamard", "--rotate-seed", "{seed}", "--method", "rtn", "--model", "{dep:fp}")),
    dict(id="had-gptq", label="Hadamard + GPTQ", control="fp", share=True,
         ptq=_ptq("--rotate", "hadamard", "--rotate-seed", "{seed}", "--method", "gptq", "--model", "{dep:fp}")),
    dict(id="ft-fp", label="FP fine-tune (control of the QAT rows)", control="fp",
         train=("fp_control", ["init_from={dep:fp}"])),
    dict(id="qat", label="QAT (LSQ weights, per-token minmax inputs)", control="ft-fp", share=True,
         train=("qat", ["init_from={dep:fp}"])),
    # quant.rotate takes its signs from train.seed, as --rotate-seed above
    dict(id="had-qat", label="Hadamard + QAT", control="ft-fp", share=True,
         train=("qat", ["init_from={dep:fp}", "quant.rotate=hadamard"])),
    dict(id="actreg", label="clip + output kurtosis from scratch, FP weights", control="fp",
         train=("actreg", [])),
    dict(id="actreg-rtn", label="clip + output kurtosis, RTN weights", control="fp", share=True,
         ptq=_ptq("--keep-activations", "--method", "rtn", "--model", "{dep:actreg}")),
    dict(id="actreg-gptq", label="clip + output kurtosis, GPTQ weights", control="fp", share=True,
         ptq=_ptq("--keep-activations", "--method", "gptq", "--model", "{dep:actreg}")),
]
ROW = {r["id"]: r for r in ROWS}


def deps(row):
    """The rows a row's unit needs first (same seed): those its commands
    name, its control (the KL reference) and the row it evaluates."""
    out = []
    words = list(row.get("ptq", [])) + (row["train"][1] if "train" in row else [])
    for w in words:
        if "{dep:" in w:
            out.append(w.split("{dep:")[1].split("}")[0])
    for k in ("control", "eval_of"):
        if row.get(k):
            out.append(row[k])
    return list(dict.fromkeys(out))


def closure(ids):
    """ids with every row they depend on, in table order."""
    need, todo = set(), list(ids)
    while todo:
        r = todo.pop()
        if r not in ROW:
            raise InputError(f"--rows: unknown row {r!r}; rows: {', '.join(ROW)}")
        if r not in need:
            need.add(r)
            todo.extend(deps(ROW[r]))
    return [r["id"] for r in ROWS if r["id"] in need]


class Mode:
    """The settings of a whole invocation: full, or a smoke run (a few
    steps and batches, to prove the pipeline; its hashes differ, so its
    results are never taken for the full ones)."""

    def __init__(self, smoke):
        self.smoke = smoke
        self.train_sets = ["train.no_final_eval=true"]  # the unit evaluates itself
        self.eval_flags, self.ptq_flags = [], ["--calib-batches", str(CALIB_BATCHES), "--batches", "1"]
        if smoke:
            # checkpoints every 10 steps: a killed smoke unit resumes from one
            self.train_sets += ["train.steps=30", "train.warmup=5", "train.eval_every=0", "train.eval_batches=2",
                                "train.ckpt_every=10", "train.log_every=10"]
            self.eval_flags = ["--batches", "4"]
            self.ptq_flags = ["--calib-batches", "2", "--batches", "1"]


# --- units -----------------------------------------------------------------

def sha256_file(path):
    try:
        with open(os.path.join(REPO, path), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}")


def git_commit():
    """HEAD, with -dirty when tracked files differ from it, and the
    sha256 of that difference (git diff HEAD; None when clean): recorded
    with each result, so two dirty trees of one commit can be told apart
    afterwards (they share unit directories: commit the tree for results
    that count)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    if not diff:
        return head, None
    return head + "-dirty", hashlib.sha256(diff).hexdigest()


class Unit:
    def __init__(self, table, model, row, seed, mode, root, hashes):
        self.table, self.model, self.row, self.seed, self.mode = table, model, row, seed, mode
        self.id = row["id"]
        spec = MODELS[model]
        sub = lambda w: w.replace("{seed}", str(seed))
        # the recipe, with the paths of this unit, its data and its
        # dependencies as placeholders: what the hash covers
        self.recipe = {"table": table, "model": model, "row": self.id, "seed": seed, "prepare": spec["prepare"]}
        files = {}
        if "train" in row:
            cfg = spec[row["train"][0]]
            files[cfg] = sha256_file(cfg)
            self.recipe["train"] = {"config": cfg, "set": [sub(s) for s in row["train"][1]]
                                    + [f"train.seed={seed}", "data.dir={data}"] + mode.train_sets}
        if "ptq" in row:
            self.recipe["ptq"] = [sub(w) for w in row["ptq"]] + ["--data", "{data}", "--seq", str(spec["seq"]),
                                                                 "--seed", str(seed)] + mode.ptq_flags
        self.recipe["eval"] = {"model": "{dep:%s}" % row["eval_of"] if row.get("eval_of") else "{out}",
                               "preset": row.get("preset", ""), "kl": row["control"] or "",
                               "flags": ["--seq", str(spec["seq"])] + mode.eval_flags}
        self.recipe["files"] = files
        self.recipe["deps"] = {d: hashes[d] for d in deps(row)}
        self.hash = hashlib.sha256(json.dumps(self.recipe, sort_keys=True).encode()).hexdigest()
        self.tdir = os.path.join(root, table)
        self.result_path = os.path.join(self.tdir, f"{self.id}-s{seed}.json")

    def data_dir(self, commit):
        """The table's data prepared at this commit."""
        return data_dir(self.tdir, commit)

    def key(self, commit):
        return hashlib.sha256(f"{commit} {self.hash}".encode()).hexdigest()[:12]

    def workdir(self, commit):
        return os.path.join(self.tdir, "runs", f"{self.id}-s{self.seed}-{self.key(commit)}")

    def model_dir(self, commit):
        """The model this unit makes (None for an eval-only row)."""
        if "train" in self.row or "ptq" in self.row:
            return os.path.join(self.workdir(commit), "model")
        return None

    def result(self):
        """The result file's contents, or None; a malformed file is bad
        input (they are written whole, so it was edited)."""
        try:
            with open(self.result_path) as f:
                r = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InputError(f"{self.result_path}: {e}")
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            raise InputError(f"{self.result_path}: no metrics object")
        return r

    def done(self, commit):
        r = self.result()
        if not r or r.get("commit") != commit or r.get("config_hash") != self.hash:
            return False
        md = self.model_dir(commit)
        return md is None or model_ready(md)


def data_dir(tdir, commit):
    return os.path.join(tdir, "data", commit[:12] + ("-dirty" if commit.endswith("-dirty") else ""))


def model_ready(d):
    """A finished qat model directory: a run's latest checkpoint or a ptq
    output."""
    return os.path.exists(os.path.join(d, "latest")) or os.path.exists(os.path.join(d, "model.safetensors"))


def units_for(model, seeds, rows, mode, root):
    if model not in MODELS:
        raise InputError(f"model {model!r}: want one of {', '.join(MODELS)} (tools/results/w4a4.py MODELS)")
    table = f"w4a4-{model}"
    out = []
    for s in seeds:
        hashes = {}
        for rid in rows:
            u = Unit(table, model, ROW[rid], s, mode, root, hashes)
            hashes[rid] = u.hash
            out.append(u)
    return out


# --- running ---------------------------------------------------------------

# the binary w4a4.sh builds from the working tree (QAT_BIN: another path)
QAT_LABEL = os.environ.get("QAT_BIN", "bin/qat")
QAT = os.path.join(REPO, QAT_LABEL)


def expand(words, u, models):
    out = []
    for w in words:
        for d, p in models.items():
            w = w.replace("{dep:%s}" % d, p)
        w = w.replace("{data}", os.path.relpath(u.data_dir(COMMIT), REPO))
        out.append(w.replace("{out}", os.path.relpath(u.model_dir(COMMIT), REPO) if u.model_dir(COMMIT) else ""))
    return out


def sh(argv, log):
    """Runs a qat command with its output appended to log; True if it
    exited 0."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        p = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
        f.write(f"exit {p.returncode}\n")
    return p.returncode == 0


def tokens_per_s(run_dir):
    """Median training tokens/s of a run (metrics.jsonl), past its first
    tenth of steps (start-up and allocation)."""
    pts = []
    try:
        for line in open(os.path.join(run_dir, "metrics.jsonl")):
            p = json.loads(line)
            if "tokens_per_s" in p:
                pts.append((p["step"], p["tokens_per_s"]))
    except (OSError, ValueError):
        return None
    if not pts:
        return None
    last = max(s for s, _ in pts)
    vals = [v for s, v in pts if s > last / 10] or [v for _, v in pts]
    return statistics.median(vals)


def run_unit(u, models):
    """Makes the unit's model, evaluates it, writes its result file."""
    wd = u.workdir(COMMIT)
    os.makedirs(wd, exist_ok=True)
    log = os.path.join(wd, "log.txt")
    md = u.model_dir(COMMIT)
    r = u.recipe
    t0 = time.time()
    commands = []
    if "train" in r:
        argv = [QAT, "train", "--config", r["train"]["config"]]
        for s in expand(r["train"]["set"], u, models) + [f"out_dir={os.path.relpath(md, REPO)}"]:
            argv += ["--set", s]
        commands.append(argv)
        if os.path.exists(os.path.join(md, "latest")):
            # a killed run goes on from its last checkpoint, with the
            # config it saved (a finished one returns at once)
            argv = [QAT, "train", "--resume", os.path.relpath(md, REPO)]
            commands.append(argv)
        if not sh(argv, log):
            return False, log
    if "ptq" in r and not model_ready(md):
        argv = [QAT, "ptq"] + expand(r["ptq"], u, models) + ["--out", os.path.relpath(md, REPO)]
        commands.append(argv)
        if not sh(argv, log):
            return False, log
    e = r["eval"]
    ev_json = os.path.relpath(os.path.join(wd, "eval.json"), REPO)
    target = expand([e["model"]], u, models)[0]
    data = os.path.relpath(u.data_dir(COMMIT), REPO)
    argv = [QAT, "eval", "--model", target, "--data", data, "--json", ev_json] + e["flags"]
    if e["preset"]:
        argv += ["--preset", e["preset"]]
    if e["kl"]:
        argv += ["--kl-divergence", models[e["kl"]]]
    commands.append(argv)
    # an evaluation a killed unit finished is kept (the directory is this
    # commit's and recipe's)
    prev = json.load(open(ev_json)) if os.path.exists(ev_json) else {}
    same = prev.get("model") == target and prev.get("kl", {}).get("reference", "") == (models[e["kl"]] if e["kl"] else "")
    if not same and not sh(argv, log):
        return False, log
    ev = json.load(open(ev_json))
    m = {"val_loss": ev["loss"], "perplexity": ev["perplexity"], "bits_per_byte": ev["bits_per_byte"], "tokens": ev["tokens"]}
    if "kl" in ev:
        m.update(kl_mean=ev["kl"]["mean"], kl_p99=ev["kl"]["p99"], top1=ev["kl"]["top1"], kl_reference=e["kl"])
    if "train" in r:
        m["tokens_per_s"] = tokens_per_s(md)
    res = {"table": u.table, "model": u.model, "row": u.id, "seed": u.seed, "commit": COMMIT, "config_hash": u.hash,
           "tree_diff_sha256": DIFF[0],
           "data_manifest_sha256": sha256_file(os.path.join(data, "manifest.json")),
           "recipe": r, "commands": [[QAT_LABEL if a == QAT else a for a in c] for c in commands],
           "workdir": os.path.relpath(wd, REPO), "metrics": m, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "wall_s": round(time.time() - t0, 1)}
    write_json(u.result_path, res)
    return True, log


def write_json(path, obj):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(args, units):
    tdir = units[0].tdir
    os.makedirs(tdir, exist_ok=True)
    lock = open(os.path.join(tdir, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"{tdir}: another w4a4.py run holds its lock")
    # the data, prepared by this commit's qat (a killed preparation leaves
    # no manifest and runs again)
    spec = MODELS[units[0].model]
    data = os.path.relpath(data_dir(tdir, COMMIT), REPO)
    if not os.path.exists(os.path.join(REPO, data, "manifest.json")):
        print(f"preparing {data}", file=sys.stderr, flush=True)
        argv = [QAT, "data", "prepare"] + spec["prepare"] + ["--out", data]
        os.makedirs(os.path.dirname(os.path.join(REPO, data)), exist_ok=True)
        if not sh(argv, os.path.join(REPO, data + ".log")):
            print(f"qat data prepare failed: {data}.log", file=sys.stderr)
            return 1
    failed, blocked, n = [], [], len(units)
    models = {}  # (seed, row) -> model path of a finished unit
    ok = {}
    for i, u in enumerate(units, 1):
        head = f"[{i}/{n}] {u.table} {u.id} seed {u.seed}"
        missing = [d for d in deps(u.row) if not ok.get((u.seed, d))]
        if missing:
            print(f"{head}: blocked (needs {', '.join(missing)})", file=sys.stderr, flush=True)
            blocked.append(f"{u.id} seed {u.seed}")
            continue
        mine = {d: models[(u.seed, d)] for d in deps(u.row) if (u.seed, d) in models}
        if u.done(COMMIT):
            print(f"{head}: done at this commit and config ({u.hash[:10]})", file=sys.stderr, flush=True)
            good = True
        else:
            t0 = time.time()
            print(f"{head}: running in {os.path.relpath(u.workdir(COMMIT), REPO)}", file=sys.stderr, flush=True)
            good, log = run_unit(u, mine)
            if good:
                m = u.result()["metrics"]
                print(f"{head}: val loss {m['val_loss']:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            else:
                tail = open(log).read().splitlines()[-8:]
                print(f"{head}: FAILED ({time.time() - t0:.0f} s); {os.path.relpath(log, REPO)} ends:\n    "
                      + "\n    ".join(tail), file=sys.stderr, flush=True)
                failed.append(f"{u.id} seed {u.seed}")
        ok[(u.seed, u.id)] = good
        md = u.model_dir(COMMIT)
        if good and md:
            models[(u.seed, u.id)] = os.path.relpath(md, REPO)
    # unit and data directories of other commits or recipes: never used
    # again, kept until --prune
    current = {os.path.join("runs", os.path.basename(u.workdir(COMMIT))) for u in units} | {os.path.relpath(data_dir(tdir, COMMIT), tdir)}
    stale = []
    for sub in ("runs", "data"):
        if os.path.isdir(os.path.join(tdir, sub)):
            stale += [os.path.join(sub, d) for d in sorted(os.listdir(os.path.join(tdir, sub)))
                      if os.path.join(sub, d) not in current and not d.endswith(".log")]
    if stale and args.prune:
        import shutil
        for d in stale:
            shutil.rmtree(os.path.join(tdir, d))
        print(f"removed {len(stale)} directories of other commits or configs", file=sys.stderr)
    elif stale:
        print(f"{len(stale)} directories under {os.path.relpath(tdir, REPO)} belong to other commits or configs "
              f"(--prune removes them)", file=sys.stderr)
    if failed or blocked:
        print(f"failed: {', '.join(failed) or 'none'}; blocked by them: {', '.join(blocked) or 'none'}", file=sys.stderr)
        return 1
    return 0


# --- rendering -------------------------------------------------------------

def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


def pm(m, sd, spec):
    if m is None:
        return "missing"
    return format(m, spec) + (f" ± {format(sd, spec)}" if sd is not None else "")


def pct(x):
    return f"{100 * x:.0f}%"


def render(args, units):
    """The markdown section of the table."""
    by = {}  # row -> seed -> result
    stale, notes = [], []
    for u in units:
        r = u.result()
        if r is None:
            continue
        if r.get("config_hash") != u.hash:
            stale.append(f"{u.id} seed {u.seed}")
            continue
        by.setdefault(u.id, {})[u.seed] = r
    rows = [ROW[rid] for rid in dict.fromkeys(u.id for u in units)]
    seeds = sorted({u.seed for u in units})
    model, table = units[0].model, units[0].table
    loss = {rid: {s: r["metrics"]["val_loss"] for s, r in d.items()} for rid, d in by.items()}
    out = []
    P = out.append
    smoke = " (smoke run: a few steps and batches; not results)" if args.smoke else ""
    P(f"## W4A4 on {model}: {len(seeds)} seeds, paired against same-seed controls{smoke}\n")
    tokens = sorted({r["metrics"]["tokens"] for d in by.values() for r in d.values()})
    cmd = f"tools/results/w4a4.sh {model}" + (" --smoke" if args.smoke else "")
    P(f"Reproduce: `{cmd}` (from nothing: every model of every seed is trained at the current commit; "
      f"table spec: tools/results/w4a4.py). Seeds {', '.join(map(str, seeds))} set initialisation and data order "
      f"(`train.seed`), the calibration batches of PTQ and the Hadamard rotation. "
      + (f"Held-out loss on {'/'.join(f'{t:,}' for t in tokens)} tokens of the validation split. " if tokens else "")
      + "KL divergence and top-1 agreement are from each row's control (same seed).\n")
    if not by:
        P(f"No unit of this table has finished: run `{cmd}`.\n")
    P("| row | control | seeds | val loss (mean ± sd) | perplexity (mean ± sd) | KL from control | top-1 vs control | train tokens/s |")
    P("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        d = by.get(row["id"], {})
        ls = [d[s]["metrics"]["val_loss"] for s in sorted(d)]
        pp = [d[s]["metrics"]["perplexity"] for s in sorted(d)]
        kl = [d[s]["metrics"]["kl_mean"] for s in sorted(d) if "kl_mean" in d[s]["metrics"]]
        t1 = [100 * d[s]["metrics"]["top1"] for s in sorted(d) if "top1" in d[s]["metrics"]]
        tps = [d[s]["metrics"]["tokens_per_s"] for s in sorted(d) if d[s]["metrics"].get("tokens_per_s")]
        P(f"| {row['label']} | {row['control'] or '-'} | {len(d)}/{len(seeds)} | {pm(*stats.mean_sd(ls), '.4f')} | "
          f"{pm(*stats.mean_sd(pp), '.2f')} | {fmt(stats.mean_sd(kl)[0], '.5f')} | "
          f"{fmt(stats.mean_sd(t1)[0], '.2f')}{'%' if t1 else ''} | "
          f"{fmt(stats.mean_sd(tps)[0], '.0f')} |")
    P("")
    P("Paired difference of val loss to the control, over the seeds both have; 95% Student-t interval. "
      "Share of RTN's degradation removed, per seed: 1 - (L_row - L_control) / (L_RTN - L_FP), "
      "its mean and 95% interval; the goal is at least 60% with an interval that excludes 0.\n")
    P("| row | control | pairs | Δ val loss (nats) | 95% interval | verdict | share of RTN's loss removed | 95% interval | goal |")
    P("|---|---|---:|---:|---:|---|---:|---:|---|")
    # the shares divide by RTN's degradation: they mean something only
    # where that degradation is measurable (its interval above 0)
    rtn_fp = stats.paired(loss.get("rtn", {}), loss.get("fp", {}))
    rtn_measurable = rtn_fp[2] is not None and rtn_fp[2] > 0
    sentences, goal_rows, share_rows, judged, undefined_seeds = [], [], 0, 0, set()
    for row in rows:
        if not row["control"]:
            continue
        a, c = loss.get(row["id"], {}), loss.get(row["control"], {})
        pseeds, m, lo, hi = stats.paired(a, c)
        v = stats.verdict(m, lo, hi, lower="lower loss than the control", higher="higher loss than the control")
        if not pseeds:
            v = "missing"
        elif v is None:
            v = "one pair: no interval"
        cells = [row["label"], row["control"], str(len(pseeds)), fmt(m, "+.4f"),
                 f"{lo:+.4f} to {hi:+.4f}" if lo is not None else "-", v]
        if row.get("share"):
            share_rows += 1
            sh, undefined = stats.share_removed(a, c, loss.get("rtn", {}), loss.get("fp", {}))
            undefined_seeds |= set(undefined)
            sm, slo, shi = stats.interval(list(sh.values()))
            g = stats.meets_goal(sm, slo) if rtn_measurable else None
            judged += g is not None
            goal = {True: "met", False: "not met"}.get(g, "-" if rtn_measurable or slo is None else "n/a: RTN's loss not measurable")
            cells += [pct(sm) if sm is not None else "-", f"{pct(slo)} to {pct(shi)}" if slo is not None else "-", goal]
            if sm is not None:
                s = f"- {row['label']}: share of RTN's degradation removed {pct(sm)}"
                s += f" (95% interval {pct(slo)} to {pct(shi)}, {len(sh)} seeds)" if slo is not None else " (one seed)"
                s += f"; loss against {row['control']}: {v}"
                s += f" ({m:+.4f} nats, {lo:+.4f} to {hi:+.4f})." if lo is not None else f" ({m:+.4f} nats)."
                sentences.append(s)
            if g:
                goal_rows.append(row["label"])
        else:
            cells += ["", "", ""]
        P("| " + " | ".join(cells) + " |")
    P("")
    if rtn_fp[1] is not None:
        f = loss["fp"]
        rel = [100 * (math.exp(loss["rtn"][s] - f[s]) - 1) for s in rtn_fp[0]]
        s = f"- RTN changes the held-out loss by {rtn_fp[1]:+.4f} nats from FP"
        s += f" (95% interval {rtn_fp[2]:+.4f} to {rtn_fp[3]:+.4f}: " + stats.verdict(*rtn_fp[1:], lower="a measurable fall", higher="a measurable rise") + ")" \
            if rtn_fp[2] is not None else ""
        s += f", perplexity by {statistics.mean(rel):+.1f}% on average over {len(rel)} seed{'s' if len(rel) > 1 else ''}."
        P(s)
    for s in sentences:
        P(s)
    if undefined_seeds:
        P(f"- Seed{'s' if len(undefined_seeds) > 1 else ''} {', '.join(map(str, sorted(undefined_seeds)))}: RTN does not "
          f"raise the loss over FP, so no share there.")
    if share_rows and rtn_measurable:
        P(f"- Rows meeting the goal (at least 60% of RTN's degradation removed, interval excluding 0): "
          f"{', '.join(goal_rows) if goal_rows else 'none'} ({judged} of {share_rows} recipe rows have an interval).")
    elif share_rows and rtn_fp[0]:
        P("- No row is judged against the goal: RTN's degradation has no interval above 0 here, and a share of it "
          "divides by noise.")
    for n in notes:
        P(f"- {n}")
    missing = {}
    for u in units:
        if u.seed not in by.get(u.id, {}) and f"{u.id} seed {u.seed}" not in stale:
            missing.setdefault(u.id, []).append(str(u.seed))
    if missing and by:
        P("- Missing (not run, failed or blocked): " + "; ".join(f"{r} seed{'s' if len(s) > 1 else ''} {', '.join(s)}"
                                                              for r, s in missing.items()) + ".")
    if stale:
        P(f"- Left out, made by another recipe than the table's now (config hash differs): {', '.join(stale)}.")
    if out[-1] != "":
        P("")
    commits = sorted({r["commit"] for d in by.values() for r in d.values()})
    P("Provenance: every unit's commit and config hash (tools/results/w4a4.py hashes the YAML files, flags and "
      "--set values of its commands and the hashes of the units it starts from)"
      + (f"; the rows come from {len(commits)} commits" if len(commits) > 1 else "")
      + ("; `-dirty`: the tree had uncommitted changes" if any(c.endswith("-dirty") for c in commits) else "") + ".\n")
    P("| row | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    P("|---|" + "---|" * len(seeds))
    for row in rows:
        d = by.get(row["id"], {})
        P(f"| {row['id']} | " + " | ".join(f"{d[s]['commit'][:10]}{'-dirty' if d[s]['commit'].endswith('-dirty') else ''} "
                                           f"{d[s]['config_hash'][:10]}" if s in d else "missing" for s in seeds) + " |")
    return "\n".join(out) + "\n"


COMMIT = None
DIFF = [None]


def main(argv):
    global COMMIT
    ap = argparse.ArgumentParser(description="The W4A4 results table (docs/results.md)")
    ap.add_argument("command", choices=["run", "render"])
    ap.add_argument("model")
    ap.add_argument("--seeds", default=os.environ.get("SEEDS", "1,2,3"), help="comma-separated (default 1,2,3; env SEEDS)")
    ap.add_argument("--rows", default="", help="comma-separated rows (and the rows they need); default all: " + ", ".join(ROW))
    ap.add_argument("--smoke", action="store_true", help="30 training steps, 4 evaluation batches: proves the pipeline")
    ap.add_argument("--root", default="runs/results", help="where the tables' directories go")
    ap.add_argument("--prune", action="store_true", help="run: remove unit directories of other commits or configs")
    a = ap.parse_args(argv)
    try:
        try:
            seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--seeds {a.seeds!r}: want integers, comma-separated")
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise InputError(f"--seeds {a.seeds!r}: want distinct non-negative integers")
        rows = closure([r.strip() for r in a.rows.split(",") if r.strip()] or list(ROW))
        root = os.path.join(REPO, a.root) if not os.path.isabs(a.root) else a.root
        units = units_for(a.model, seeds, rows, Mode(a.smoke), root)
        if a.command == "run":
            COMMIT, DIFF[0] = git_commit()
            return run(a, units)
        sys.stdout.write(render(a, units))
        return 0
    except InputError as e:
        print(f"w4a4.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
