#!/usr/bin/env python3
"""The machinery the seeded result tables of docs/results.md share
(tools/results/w4a4.py, qat.py, ptq.py, lrqat.py, states.py): a table
module gives its rows and its rendering; this module makes them into
units, runs them and keeps their results.

A unit is one (table, row, seed): a few ./bin/qat commands (train, ptq,
eval --json) whose result file, ROOT/TABLE-MODEL/ROW-sSEED.json, is
written whole (temporary file and rename) and holds the metrics, the
commit (with -dirty and the hash of `git diff HEAD` when tracked files
differ from HEAD) and the hash of the unit's resolved recipe: the YAML
files it reads (their sha256), the files it generates, every flag and
--set, and the hashes of the units it starts from. Each dataset is prepared
anew at each commit, once for all tables of a root
(ROOT/data/NAME-FLAGS/COMMIT). `run` skips a unit whose result file has the
current commit and hash and whose model is still on disk; the others run in
a directory named by commit and hash (ROOT/TABLE-MODEL/runs/ROW-sSEED-KEY/),
so nothing of another commit is reused, and a killed unit resumes there
(`qat train --resume` from its last checkpoint). A failed unit leaves its
row missing (and the rows built on it); `run` goes on with the others and
exits 1 at the end.

A unit that makes a model may take it from another table of the same root
instead (`borrowed_from` in its result): only a finished model of the same
commit, the same tree (diff hash), the same prepared data (manifest
sha256) and the same model key, the hash of what makes the model (dataset
flags, config file hashes, --set values, ptq flags, generated files and
the model keys of the units it starts from; not the table, nor how it is
evaluated). The tiny tables share their per-seed base models and FP
fine-tunes so. The borrowing unit still evaluates the model itself.

Rows are dicts; the keys this module reads:
  id, label       the row's name in file names and in the table
  train           (CONFIG, [--set values]): CONFIG a key of the model's
                  spec or a path; train.seed=SEED and data.dir are added
  derive          {"replace": [[old, new], ...], "append": text}: the
                  config the unit trains with is CONFIG's text so changed
                  (written into the unit's directory; each old must occur)
  ptq             qat ptq flags (--data, --seq, --seed and the
                  calibration flags are added)
  gen             {NAME: JSON}: files written into the unit's directory
                  ({file:NAME} in flags)
  eval_of, preset the unit evaluates row eval_of's model with --preset
  kl              row whose model is the KL-divergence reference
  kurtosis        evaluate with --kurtosis (per-linear input kurtosis)
  data            dataset (DATASETS) when not the model's
  once            a measurement: run for the first seed only
  measure         no evaluation: the command's peak RSS, tokens/s and what
                  its log says are the result; its model is removed after
  smoke_sets      --set values added in --smoke runs only
Placeholders: {seed}, {dep:ROW} (that row's model, same seed), {data},
{file:NAME}, {out}. Other keys are the table module's (render only).

Bad input (an unknown model or row, a malformed result file) is exit 2
naming it."""
import argparse
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
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


# The datasets the tables train and evaluate on: qat data prepare flags.
# Each is prepared by the current commit's qat once per root and commit.
DATASETS = {
    "sotu": ["--input", "../shared/data/sotu"],                      # vocab 4096: tiny
    "sotu-8k": ["--input", "../shared/data/sotu", "--vocab", "8192"],  # small, base
}


# --- files and commits --------------------------------------------------------

def sha256_file(path):
    try:
        with open(os.path.join(REPO, path), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}")


def sha256_json(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def git_commit():
    """HEAD, with -dirty when tracked files differ from it, and the sha256
    of that difference (None when clean): recorded with each result, so two
    dirty trees of one commit can be told apart (they share unit
    directories: commit the tree for results that count). docs/results.md
    is left out: every table writes its section there, and the next table
    run in the same tree computes nothing differently."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "HEAD", "--", ".", ":(exclude)docs/results.md"], cwd=REPO, capture_output=True, check=True).stdout
    if not diff:
        return head, None
    return head + "-dirty", hashlib.sha256(diff).hexdigest()


def read(path):
    """A file's text (path relative to the repository or absolute)."""
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def read_json(path):
    return json.loads(read(path))


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


def write_text(path, text):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def rel(path):
    """A path as commands and result files name it: relative to the
    repository when inside it (the tables' default root), else absolute."""
    path = os.path.abspath(os.path.join(REPO, path))
    return os.path.relpath(path, REPO) if path == REPO or path.startswith(REPO + os.sep) else path


def model_ready(d):
    """A finished qat model directory: a run's latest checkpoint or a ptq
    output (d relative to the repository or absolute)."""
    d = os.path.join(REPO, d)
    return os.path.exists(os.path.join(d, "latest")) or os.path.exists(os.path.join(d, "model.safetensors"))


def tokens_per_s(run_dir):
    """Median training tokens/s of a run (metrics.jsonl), past its first
    tenth of steps (start-up and allocation)."""
    pts = []
    try:
        for line in read(os.path.join(run_dir, "metrics.jsonl")).splitlines():
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


# what qat train prints about the model it built (the last occurrence: a
# resumed run prints it again)
_PARAMS = re.compile(r"^parameters: (\d+) trainable, (\d+) frozen float32 \+ (\d+) frozen int8")
_OPT = re.compile(r"optimizer state \((\w+)\) ([\d.]+) MB, ([\d.]+) bytes per parameter")


def log_facts(text):
    out = {}
    for line in text.splitlines():
        m = _PARAMS.match(line)
        if m:
            out.update(trainable_params=int(m[1]), frozen_f32_params=int(m[2]), frozen_int8_params=int(m[3]))
        m = _OPT.search(line)
        if m:
            out.update(optimizer_state=m[1], optimizer_mb=float(m[2]), optimizer_bytes_per_param=float(m[3]))
    return out


# --- the specification ------------------------------------------------------

def placeholders(words, kind):
    """The NAMEs of {kind:NAME} in words."""
    out = []
    for w in words:
        for part in w.split("{" + kind + ":")[1:]:
            out.append(part.split("}")[0])
    return out


def model_words(row):
    return list(row.get("ptq", [])) + (list(row["train"][1]) if "train" in row else [])


def model_deps(row):
    """The rows whose models this row's model is made from."""
    return list(dict.fromkeys(placeholders(model_words(row), "dep")))


def deps(row):
    """The rows a row's unit needs first (same seed): those its commands
    name, its KL reference and the row it evaluates."""
    out = model_deps(row)
    for k in ("kl", "eval_of"):
        if row.get(k):
            out.append(row[k])
    return list(dict.fromkeys(out))


def makes_model(row):
    return "train" in row or "ptq" in row


def check_rows(rows, where):
    """Spec errors are the table module's: exit 2 naming the row."""
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: a row id twice")
    seen = set()
    for r in rows:
        for d in deps(r):
            if d not in seen:
                raise InputError(f"{where}: row {r['id']} needs {d}, which is not an earlier row")
        for d in model_deps(r):
            if not makes_model(next(x for x in rows if x["id"] == d)):
                raise InputError(f"{where}: row {r['id']} starts from {d}, which makes no model")
        if not makes_model(r) and not r.get("eval_of"):
            raise InputError(f"{where}: row {r['id']} neither makes a model nor evaluates one")
        if r.get("once") and not r.get("measure"):
            raise InputError(f"{where}: row {r['id']}: once is for measurements")
        seen.add(r["id"])


def closure(rows, ids):
    """ids with every row they depend on, in table order."""
    by = {r["id"]: r for r in rows}
    need, todo = set(), list(ids)
    while todo:
        r = todo.pop()
        if r not in by:
            raise InputError(f"--rows: unknown row {r!r}; rows: {', '.join(by)}")
        if r not in need:
            need.add(r)
            todo.extend(deps(by[r]))
    return [r["id"] for r in rows if r["id"] in need]


class Mode:
    """The settings of a whole invocation: full, or a smoke run (two steps
    of 2 x 32 tokens, a batch or two: proves the pipeline; its hashes
    differ, so its results are never taken for the full ones). Every table
    runs with these, so equal rows of two tables have equal model keys."""

    def __init__(self, smoke):
        self.smoke = smoke
        self.train_sets = ["train.no_final_eval=true"]  # the unit evaluates itself
        self.eval_flags = []
        self.ptq_flags = ["--calib-batches", "16", "--batches", "1"]
        if smoke:
            self.train_sets += ["train.steps=2", "train.warmup=1", "train.batch=2", "train.seq=32",
                                "train.eval_every=0", "train.eval_batches=1", "train.ckpt_every=1", "train.log_every=1"]
            self.eval_flags = ["--batch", "2", "--batches", "2"]
            self.ptq_flags = ["--calib-batches", "1", "--batches", "1", "--batch", "2"]

    def seq(self, seq):
        return 32 if self.smoke else seq


def model_key(recipe, dep_keys):
    """The hash of what makes a unit's model (not how it is evaluated, nor
    its table): equal keys at one commit and tree make the same model."""
    d = {k: recipe[k] for k in ("prepare", "train", "ptq", "gen", "files") if k in recipe}
    d["deps"] = dep_keys
    return sha256_json(d)


class Unit:
    def __init__(self, spec, model, row, seed, mode, root, hashes, keys):
        self.spec, self.model, self.row, self.seed, self.mode = spec, model, row, seed, mode
        self.id = row["id"]
        self.table = f"{spec.NAME}-{model}"
        ms = spec.MODELS[model]
        self.dataset = row.get("data", ms["data"])
        if self.dataset not in DATASETS:
            raise InputError(f"row {self.id}: unknown dataset {self.dataset!r}")
        seq = str(mode.seq(row.get("seq", ms["seq"])))
        sub = lambda w: w.replace("{seed}", str(seed))
        # the recipe, with the paths of this unit, its data and its
        # dependencies as placeholders: what the hash covers
        r = {"table": self.table, "model": model, "row": self.id, "seed": seed, "prepare": DATASETS[self.dataset]}
        files = {}
        if "train" in row:
            cfg = ms.get(row["train"][0], row["train"][0])
            files[cfg] = sha256_file(cfg)
            sets = [sub(s) for s in row["train"][1]] + [f"train.seed={seed}", "data.dir={data}"] + mode.train_sets
            if mode.smoke:
                sets += ms.get("smoke_sets", []) + row.get("smoke_sets", [])
            r["train"] = {"config": cfg, "set": sets}
            if row.get("derive"):
                r["train"]["derive"] = row["derive"]
        if "ptq" in row:
            r["ptq"] = [sub(w) for w in row["ptq"]] + ["--data", "{data}", "--seq", seq, "--seed", str(seed)] + mode.ptq_flags
        if row.get("gen"):
            r["gen"] = row["gen"]
        if row.get("measure"):
            r["measure"] = True
        else:
            ev = {"model": "{dep:%s}" % row["eval_of"] if row.get("eval_of") else "{out}",
                  "preset": row.get("preset", ""), "kl": row.get("kl") or "",
                  "flags": ["--seq", seq] + (mode.eval_flags if mode.smoke else ms.get("eval_flags", []))}
            if row.get("kurtosis"):
                ev["kurtosis"] = True
            r["eval"] = ev
        r["files"] = files
        r["deps"] = {d: hashes[d] for d in deps(row)}
        self.recipe = r
        self.hash = sha256_json(r)
        self.model_key = model_key(r, {d: keys[d] for d in model_deps(row)}) if makes_model(row) else None
        self.root = root
        self.tdir = os.path.join(root, self.table)
        self.result_path = os.path.join(self.tdir, f"{self.id}-s{seed}.json")

    def key(self, commit, diff):
        return hashlib.sha256(f"{commit} {diff or ''} {self.hash}".encode()).hexdigest()[:12]

    def workdir(self, commit, diff):
        """The unit's directory at a commit and tree: named by both and
        the recipe, so nothing made by another is reused."""
        return os.path.join(self.tdir, "runs", f"{self.id}-s{self.seed}-{self.key(commit, diff)}")

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

    def done(self, commit, diff):
        r = self.result()
        if not r or r.get("commit") != commit or r.get("config_hash") != self.hash or r.get("tree_diff_sha256") != diff:
            return False
        if makes_model(self.row) and not self.row.get("measure"):
            return bool(r.get("model_dir")) and model_ready(r["model_dir"])
        return True


def data_dir(root, dataset, commit, diff):
    """Where a dataset is prepared at a commit (and tree), shared by the
    tables of a root; named by its flags too, so changed flags prepare it
    anew."""
    flags = hashlib.sha256(json.dumps(DATASETS[dataset]).encode()).hexdigest()[:8]
    return os.path.join(root, "data", f"{dataset}-{flags}", commit[:12] + (f"-dirty-{diff[:8]}" if diff else ""))


def units_for(spec, model, seeds, row_ids, mode, root):
    """The units of table SPEC-MODEL for the seeds and rows (with the rows
    they need), in run order: seed by seed, rows in table order; a once row
    for the first seed only."""
    if model not in spec.MODELS:
        raise InputError(f"model {model!r}: want one of {', '.join(spec.MODELS)} (tools/results/{spec.NAME}.py MODELS)")
    rows = spec.rows(model)
    check_rows(rows, f"tools/results/{spec.NAME}.py rows({model})")
    by = {r["id"]: r for r in rows}
    out = []
    for s in seeds:
        hashes, keys = {}, {}
        for rid in row_ids:
            row = by[rid]
            u = Unit(spec, model, row, s, mode, root, hashes, keys)
            hashes[rid], keys[rid] = u.hash, u.model_key
            if not row.get("once") or s == seeds[0]:
                out.append(u)
    return out


# --- running -----------------------------------------------------------------

def qat_bin():
    """The binary the .sh drivers build from the working tree (QAT_BIN:
    another path): (its label in result files, its path)."""
    label = os.environ.get("QAT_BIN", "bin/qat")
    return label, os.path.join(REPO, label)


def sh(argv, log):
    """Runs a qat command with its output appended to log: (exited 0, its
    peak RSS in MiB). The RSS is the child's own (wait4), what
    /usr/bin/time -v reports as its maximum resident set size."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        p = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        f.write(f"exit {p.returncode}\n")
    return p.returncode == 0, ru.ru_maxrss / 1024


class Context:
    """One `run`: the commit, the prepared data and what happened to each
    unit (for the summary and the tests)."""

    def __init__(self, root, commit, diff):
        self.root, self.commit, self.diff = root, commit, diff
        self.manifest = {}  # dataset -> sha256 of its manifest.json
        self.ran, self.skipped, self.borrowed, self.failed, self.blocked = [], [], [], [], []

    def data(self, dataset):
        return rel(data_dir(self.root, dataset, self.commit, self.diff))


def prepare_data(ctx, dataset, qat):
    """The dataset prepared by this commit's qat, once for all tables of
    the root (a lock: two tables may start together; a killed preparation
    leaves no manifest and runs again)."""
    d = ctx.data(dataset)
    os.makedirs(os.path.join(ctx.root, "data"), exist_ok=True)
    with open(os.path.join(ctx.root, "data", ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(REPO, d, "manifest.json")):
            print(f"preparing {d}", file=sys.stderr, flush=True)
            if os.path.exists(os.path.join(REPO, d)):
                shutil.rmtree(os.path.join(REPO, d))
            os.makedirs(os.path.dirname(os.path.join(REPO, d)), exist_ok=True)
            ok, _ = sh([qat, "data", "prepare"] + DATASETS[dataset] + ["--out", d], os.path.join(REPO, d + ".log"))
            if not ok:
                return False
    ctx.manifest[dataset] = sha256_file(os.path.join(d, "manifest.json"))
    return True


# the metrics of making a model (not of evaluating it): a borrowed model
# brings them from its source
MADE_KEYS = ("tokens_per_s", "train_peak_rss_mib", "ptq_peak_rss_mib", "trainable_params", "frozen_f32_params",
             "frozen_int8_params", "optimizer_state", "optimizer_mb", "optimizer_bytes_per_param")


def find_borrow(u, ctx):
    """A finished model of another table of the root that this unit would
    make itself: same commit, tree, data and model key (see the module
    doc). Returns what the result records of it, or None."""
    if not u.model_key or u.row.get("measure"):
        return None
    suffix = f"-s{u.seed}.json"
    for t in sorted(os.listdir(u.root)):
        tdir = os.path.join(u.root, t)
        if t == u.table or t == "data" or not os.path.isdir(tdir):
            continue
        for name in sorted(os.listdir(tdir)):
            if not name.endswith(suffix):
                continue
            try:
                r = read_json(os.path.join(tdir, name))
                if r.get("commit") != ctx.commit or r.get("tree_diff_sha256") != ctx.diff or r.get("seed") != u.seed:
                    continue
                recipe = r["recipe"]
                if sha256_json(recipe) != r["config_hash"]:
                    continue  # edited by hand: not trusted
                key, md = r.get("model_key"), r.get("model_dir")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # another table's file: not this table's input
            if key != u.model_key or r.get("data_manifest_sha256") != ctx.manifest[u.dataset] or not md or not model_ready(md):
                continue
            measured = {k: v for k, v in r.get("metrics", {}).items() if k in MADE_KEYS}
            return {"result": rel(os.path.join(tdir, name)), "table": r.get("table"), "row": r.get("row"),
                    "config_hash": r["config_hash"], "model_dir": md, "measured": measured}
    return None


def expand(words, u, ctx, models, out):
    vals = {"{data}": ctx.data(u.dataset), "{out}": out or ""}
    for d, p in models.items():
        vals["{dep:%s}" % d] = p
    for name in u.recipe.get("gen", {}):
        vals["{file:%s}" % name] = rel(os.path.join(u.workdir(ctx.commit, ctx.diff), name))
    res = []
    for w in words:
        for k, v in vals.items():
            w = w.replace(k, v)
        if re.search(r"\{(dep|file):", w):
            raise InputError(f"row {u.id}: unresolved placeholder in {w!r}")
        res.append(w)
    return res


def derived_config(u, path):
    """The config text a derive spec makes of the unit's config file."""
    text = read(u.recipe["train"]["config"])
    dv = u.recipe["train"]["derive"]
    for old, new in dv.get("replace", []):
        if old not in text:
            raise InputError(f"row {u.id}: {u.recipe['train']['config']} has no {old!r} to replace")
        text = text.replace(old, new)
    if dv.get("append"):
        text = text.rstrip("\n") + "\n" + dv["append"].rstrip("\n") + "\n"
    write_text(path, text)
    return rel(path)


def run_unit(u, ctx, models):
    """Makes the unit's model (or borrows it), evaluates it, writes its
    result file. Returns (ok, log path)."""
    label, qat = qat_bin()
    wd = u.workdir(ctx.commit, ctx.diff)
    os.makedirs(wd, exist_ok=True)
    log = os.path.join(wd, "log.txt")
    r = u.recipe
    t0 = time.time()
    for name, obj in r.get("gen", {}).items():
        write_json(os.path.join(wd, name), obj)
    m, model_dir, borrowed = {}, None, None
    made_path = os.path.join(wd, "made.json")
    if makes_model(u.row):
        borrowed = find_borrow(u, ctx)
        if borrowed:
            # what the source measured while making the model comes along
            # (its result names it)
            model_dir = borrowed.pop("model_dir")
            made = {"commands": [], "measured": borrowed.pop("measured")}
        elif os.path.exists(made_path) and not u.row.get("measure"):
            # made by an earlier attempt of this unit (same commit and
            # recipe) that failed later: kept with what was measured then
            made = read_json(made_path)
            model_dir = made["model_dir"]
        else:
            md = rel(os.path.join(wd, "model"))
            made = {"commands": [], "model_dir": md, "measured": {}}
            if u.row.get("measure") and os.path.exists(os.path.join(REPO, md)):
                shutil.rmtree(os.path.join(REPO, md))  # a measurement runs whole
            if "train" in r:
                if os.path.exists(os.path.join(REPO, md, "latest")):
                    # a killed run goes on from its last checkpoint, with
                    # the config it saved; its peak RSS is not the run's
                    argv = [qat, "train", "--resume", md]
                    made["resumed"] = True
                else:
                    cfg = r["train"]["config"]
                    if "derive" in r["train"]:
                        cfg = derived_config(u, os.path.join(wd, "config.yaml"))
                    argv = [qat, "train", "--config", cfg]
                    for s in expand(r["train"]["set"], u, ctx, models, md) + [f"out_dir={md}"]:
                        argv += ["--set", s]
                made["commands"].append(argv)
                ok, rss = sh(argv, log)
                if not ok:
                    return False, log
                if not made.get("resumed"):
                    made["measured"]["train_peak_rss_mib"] = rss
                made["measured"]["tokens_per_s"] = tokens_per_s(md)
                made["measured"].update(log_facts(read(log)))
            if "ptq" in r:
                argv = [qat, "ptq"] + expand(r["ptq"], u, ctx, models, md) + ["--out", md]
                if os.path.exists(os.path.join(REPO, md)):
                    argv.append("--force")  # a killed ptq's partial output
                made["commands"].append(argv)
                ok, rss = sh(argv, log)
                if not ok:
                    return False, log
                made["measured"]["ptq_peak_rss_mib"] = rss
            model_dir = md
            if not u.row.get("measure"):
                write_json(made_path, made)
        m.update(made.get("measured", {}))
    commands = list(made["commands"]) if makes_model(u.row) else []
    res = {"table": u.table, "model": u.model, "row": u.id, "seed": u.seed, "commit": ctx.commit, "config_hash": u.hash,
           "model_key": u.model_key, "tree_diff_sha256": ctx.diff, "data_manifest_sha256": ctx.manifest[u.dataset],
           "recipe": r, "workdir": rel(wd)}
    if "eval" in r:
        e = r["eval"]
        ev_json = rel(os.path.join(wd, "eval.json"))
        target = models[e["model"][5:-1]] if e["model"].startswith("{dep:") else model_dir
        argv = [qat, "eval", "--model", target, "--data", ctx.data(u.dataset), "--json", ev_json] + e["flags"]
        if e["preset"]:
            argv += ["--preset", e["preset"]]
        if e["kl"]:
            argv += ["--kl-divergence", models[e["kl"]]]
        if e.get("kurtosis"):
            argv += ["--kurtosis"]
        commands.append(argv)
        # an evaluation a killed unit finished is kept (the directory is
        # this commit's and recipe's)
        prev = read_json(ev_json) if os.path.exists(os.path.join(REPO, ev_json)) else {}
        same = prev.get("model") == target and prev.get("kl", {}).get("reference", "") == (models[e["kl"]] if e["kl"] else "")
        if not same:
            ok, _ = sh(argv, log)
            if not ok:
                return False, log
        ev = read_json(ev_json)
        m.update(val_loss=ev["loss"], perplexity=ev["perplexity"], bits_per_byte=ev["bits_per_byte"], tokens=ev["tokens"])
        if "kl" in ev:
            m.update(kl_mean=ev["kl"]["mean"], kl_p99=ev["kl"]["p99"], top1=ev["kl"]["top1"], kl_reference=e["kl"])
        if "kurtosis" in ev:
            m["kurtosis"] = ev["kurtosis"]
    elif u.row.get("measure") and model_dir and os.path.exists(os.path.join(REPO, model_dir)):
        shutil.rmtree(os.path.join(REPO, model_dir))  # measured; not needed again
        model_dir = None
    res.update(model_dir=model_dir if not u.row.get("measure") else None, borrowed_from=borrowed,
               commands=[[label if a == qat else a for a in c] for c in commands], metrics=m,
               finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), wall_s=round(time.time() - t0, 1))
    write_json(u.result_path, res)
    return True, log


def run(units, ctx, prune=False):
    """Runs every unit not done at this commit; returns the exit status
    (1 if any failed or was blocked). ctx records what happened."""
    tdir = units[0].tdir
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{tdir}: another run of this table holds its lock")
        return _run(units, ctx, prune)


def _run(units, ctx, prune):
    tdir = units[0].tdir
    _, qat = qat_bin()
    if not os.access(qat, os.X_OK):
        raise InputError(f"{qat}: no qat binary (make build, or the table's .sh driver)")
    for ds in dict.fromkeys(u.dataset for u in units):
        if not prepare_data(ctx, ds, qat):
            print(f"qat data prepare failed: {ctx.data(ds)}.log", file=sys.stderr)
            return 1
    n = len(units)
    models, ok = {}, {}  # (seed, row) -> model path of a finished unit; -> finished
    for i, u in enumerate(units, 1):
        head = f"[{i}/{n}] {u.table} {u.id} seed {u.seed}"
        # a once row of the first seed needs only that seed's rows
        missing = [d for d in deps(u.row) if not ok.get((u.seed, d))]
        if missing:
            print(f"{head}: blocked (needs {', '.join(missing)})", file=sys.stderr, flush=True)
            ctx.blocked.append((u.id, u.seed))
            continue
        mine = {d: models[(u.seed, d)] for d in deps(u.row) if (u.seed, d) in models}
        if u.done(ctx.commit, ctx.diff):
            print(f"{head}: done at this commit and config ({u.hash[:10]})", file=sys.stderr, flush=True)
            ctx.skipped.append((u.id, u.seed))
            good = True
        else:
            t0 = time.time()
            print(f"{head}: running in {rel(u.workdir(ctx.commit, ctx.diff))}", file=sys.stderr, flush=True)
            good, log = run_unit(u, ctx, mine)
            if good:
                res = u.result()
                ctx.ran.append((u.id, u.seed))
                if res.get("borrowed_from"):
                    ctx.borrowed.append((u.id, u.seed))
                got = res["metrics"].get("val_loss")
                what = f"val loss {got:.4f}" if got is not None else "measured"
                if res.get("borrowed_from"):
                    what += f" (model of {res['borrowed_from']['table']} {res['borrowed_from']['row']})"
                print(f"{head}: {what} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            else:
                tail = read(log).splitlines()[-8:]
                print(f"{head}: FAILED ({time.time() - t0:.0f} s); {rel(log)} ends:\n    "
                      + "\n    ".join(tail), file=sys.stderr, flush=True)
                ctx.failed.append((u.id, u.seed))
        ok[(u.seed, u.id)] = good
        if good:
            md = u.result().get("model_dir")
            if md:
                models[(u.seed, u.id)] = md
    # unit directories of other commits or recipes: never used again, kept
    # until --prune (the shared data of other commits with them)
    current = {os.path.basename(u.workdir(ctx.commit, ctx.diff)) for u in units}
    rdir = os.path.join(tdir, "runs")
    stale = [os.path.join(rdir, d) for d in sorted(os.listdir(rdir)) if d not in current] if os.path.isdir(rdir) else []
    ddir = os.path.join(ctx.root, "data")
    mine = os.path.basename(data_dir(ctx.root, units[0].dataset, ctx.commit, ctx.diff))
    for ds in sorted(os.listdir(ddir)) if os.path.isdir(ddir) else []:
        if os.path.isdir(os.path.join(ddir, ds)):
            stale += [os.path.join(ddir, ds, c) for c in sorted(os.listdir(os.path.join(ddir, ds)))
                      if c != mine and not c.endswith(".log")]
    if stale and prune:
        for d in stale:
            shutil.rmtree(d)
        print(f"removed {len(stale)} directories of other commits or configs", file=sys.stderr)
    elif stale:
        print(f"{len(stale)} directories under {rel(ctx.root)} belong to other commits or configs "
              f"(--prune removes them)", file=sys.stderr)
    if ctx.failed or ctx.blocked:
        fmt_ = lambda xs: ", ".join(f"{r} seed {s}" for r, s in xs) or "none"
        print(f"failed: {fmt_(ctx.failed)}; blocked by them: {fmt_(ctx.blocked)}", file=sys.stderr)
        return 1
    return 0


# --- rendering ---------------------------------------------------------------

def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


def pm(m, sd, spec, none="missing"):
    if m is None:
        return none
    return format(m, spec) + (f" ± {format(sd, spec)}" if sd is not None else "")


def pct(x, spec=".0f"):
    return f"{format(100 * x, spec)}%"


def verdict_cell(pseeds, m, lo, hi, lower, higher):
    """The verdict of a paired difference: missing, one pair, or
    stats.verdict's (NO_DIFFERENCE exactly when the interval holds 0)."""
    if not pseeds:
        return "missing"
    if lo is None:
        return "one pair: no interval"
    return stats.verdict(m, lo, hi, lower=lower, higher=higher)


def diff_text(m, lo, hi, spec="+.4f", unit=" nats"):
    """The value and its interval in parentheses, for a sentence; empty
    without a value."""
    if m is None:
        return ""
    return f" ({format(m, spec)}{unit}" + (f", 95% interval {format(lo, spec)} to {format(hi, spec)})" if lo is not None else ")")


def config_int(path, section, key):
    """An integer of a config file's section (the tables' layout, read
    without a YAML library): what a table shows before any unit ran."""
    sec = None
    for line in read(path).splitlines(True):
        m = re.match(r"^(\w+):", line)
        if m:
            sec = m[1]
        m = re.match(r"^\s+(\w+):\s*(\d+)\s*(#.*)?$", line)
        if m and sec == section and m[1] == key:
            return int(m[2])
    raise InputError(f"{path}: no {section}.{key}")


def log_ratio(num, den):
    """Per seed log(num/den) over the seeds both have (dicts seed ->
    positive value): (seeds, geometric mean of num/den, its 95% interval
    lo, hi, the interval of the logs (m, lo, hi)). Seeds with a value <= 0
    are left out."""
    seeds = sorted(s for s in set(num) & set(den) if num[s] > 0 and den[s] > 0)
    logs = [math.log(num[s] / den[s]) for s in seeds]
    m, lo, hi = stats.interval(logs)
    ex = lambda x: None if x is None else math.exp(x)
    return seeds, ex(m), ex(lo), ex(hi), (m, lo, hi)


class View:
    """The results of a table's units, as render functions read them."""

    def __init__(self, units, smoke, command):
        self.units, self.smoke, self.command = units, smoke, command
        self.by, self.stale = {}, []
        for u in units:
            r = u.result()
            if r is None:
                continue
            if r.get("config_hash") != u.hash:
                self.stale.append(f"{u.id} seed {u.seed}")
                continue
            self.by.setdefault(u.id, {})[u.seed] = r
        self.rows = []
        for u in units:
            if u.row not in self.rows:
                self.rows.append(u.row)
        # labels of rows left out by --rows too (a pair's reference)
        self.row = {r["id"]: r for r in units[0].spec.rows(units[0].model)}
        self.seeds = sorted({u.seed for u in units})
        self.expected = {}
        for u in units:
            self.expected.setdefault(u.id, []).append(u.seed)
        self.model, self.table = units[0].model, units[0].table

    def metric(self, rid, key):
        """seed -> value of a metric of a row (seeds that have it)."""
        return {s: r["metrics"][key] for s, r in self.by.get(rid, {}).items() if r["metrics"].get(key) is not None}

    def mean_sd(self, rid, key, scale=1.0):
        v = self.metric(rid, key)
        return stats.mean_sd([scale * v[s] for s in sorted(v)])

    def count(self, rid):
        return f"{len(self.by.get(rid, {}))}/{len(self.expected.get(rid, []))}"

    def paired(self, rid, ref, key="val_loss"):
        return stats.paired(self.metric(rid, key), self.metric(ref, key))

    def label(self, rid):
        return self.row[rid]["label"]

    def held_out(self):
        """A sentence naming the held-out tokens the results were
        evaluated on (empty before any evaluation)."""
        tokens = sorted({r["metrics"]["tokens"] for d in self.by.values() for r in d.values() if "tokens" in r["metrics"]})
        return f"Held-out loss on {'/'.join(f'{t:,}' for t in tokens)} tokens of the validation split. " if tokens else ""

    def smoke_note(self):
        return " (smoke run: two steps and batches; not results)" if self.smoke else ""

    def footer(self, spec_file):
        """Missing and stale units, then every unit's commit and config
        hash."""
        out = self.notes()
        if out:
            out.append("")
        return out + self.provenance(f"{spec_file} with tools/results/units.py")

    def borrowed(self):
        """The tables whose models this one took."""
        return sorted({r["borrowed_from"]["table"] for d in self.by.values() for r in d.values() if r.get("borrowed_from")})

    def notes(self, unrun=True):
        """Bullets on the missing, stale and borrowed units (unrun: and on
        a table with no finished unit, for a table that says so nowhere
        else)."""
        out = []
        missing = {}
        for u in self.units:
            if u.seed not in self.by.get(u.id, {}) and f"{u.id} seed {u.seed}" not in self.stale:
                missing.setdefault(u.id, []).append(str(u.seed))
        if missing and self.by:
            out.append("- Missing (not run, failed or blocked): " + "; ".join(
                f"{r} seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for r, s in missing.items()) + ".")
        if not self.by and unrun:
            out.append(f"- No unit of this table has finished: run `{self.command}`.")
        if self.stale:
            out.append(f"- Left out, made by another recipe than the table's now (config hash differs): {', '.join(self.stale)}.")
        borrowed = self.borrowed()
        if borrowed:
            out.append(f"- Models taken from {', '.join(borrowed)} (same commit, data and model recipe; evaluated here): "
                       "the provenance table marks them.")
        return out

    def provenance(self, hasher):
        """Every unit's commit and config hash: a sentence naming what
        hashed them, then the table."""
        commits = sorted({r["commit"] for d in self.by.values() for r in d.values()})
        out = [f"Provenance: every unit's commit and config hash ({hasher} hashes the "
               "YAML files, flags and --set values of its commands and the hashes of the units it starts from)"
               + (f"; the rows come from {len(commits)} commits" if len(commits) > 1 else "")
               + ("; `-dirty`: the tree had uncommitted changes" if any(c.endswith("-dirty") for c in commits) else "")
               + ("; `(b)`: the model was taken from another table" if self.borrowed() else "") + ".\n"]
        out.append("| row | " + " | ".join(f"seed {s}" for s in self.seeds) + " |")
        out.append("|---|" + "---|" * len(self.seeds))
        for row in self.rows:
            d = self.by.get(row["id"], {})
            cells = []
            for s in self.seeds:
                if s not in self.expected[row["id"]]:
                    cells.append("-")
                elif s in d:
                    c = d[s]["commit"]
                    cells.append(f"{c[:10]}{'-dirty' if c.endswith('-dirty') else ''} {d[s]['config_hash'][:10]}"
                                 + (" (b)" if d[s].get("borrowed_from") else ""))
                else:
                    cells.append("missing")
            out.append(f"| {row['id']} | " + " | ".join(cells) + " |")
        return out


# --- command line ------------------------------------------------------------

def parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: want integers, comma-separated")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(f"--seeds {text!r}: want distinct non-negative integers")
    return seeds


def command(spec, model, smoke):
    return f"tools/results/{spec.NAME}.sh {model}" + (" --smoke" if smoke else "")


def main(spec, argv):
    """`run` or `render` of a table module (its NAME, MODELS, rows(model)
    and render(view))."""
    ap = argparse.ArgumentParser(description=f"The {spec.NAME} results tables (docs/results.md)")
    ap.add_argument("command", choices=["run", "render"])
    ap.add_argument("model")
    ap.add_argument("--seeds", default=os.environ.get("SEEDS", "1,2,3"), help="comma-separated (default 1,2,3; env SEEDS)")
    ap.add_argument("--rows", default="", help="comma-separated rows (and the rows they need); default all")
    ap.add_argument("--smoke", action="store_true", help="two training steps, two evaluation batches: proves the pipeline")
    ap.add_argument("--root", default="runs/results", help="where the tables' directories go")
    ap.add_argument("--prune", action="store_true", help="run: remove unit and data directories of other commits or configs")
    a = ap.parse_args(argv)
    try:
        seeds = parse_seeds(a.seeds)
        if a.model not in spec.MODELS:
            raise InputError(f"model {a.model!r}: want one of {', '.join(spec.MODELS)} (tools/results/{spec.NAME}.py MODELS)")
        rows = spec.rows(a.model)
        ids = closure(rows, [r.strip() for r in a.rows.split(",") if r.strip()] or [r["id"] for r in rows])
        root = os.path.join(REPO, a.root) if not os.path.isabs(a.root) else a.root
        units = units_for(spec, a.model, seeds, ids, Mode(a.smoke), root)
        if a.command == "run":
            commit, diff = git_commit()
            return run(units, Context(root, commit, diff), a.prune)
        sys.stdout.write(spec.render(View(units, a.smoke, command(spec, a.model, a.smoke))))
        return 0
    except InputError as e:
        print(f"{spec.NAME}.py: {e}", file=sys.stderr)
        return 2
