#!/usr/bin/env python3
"""Tests of the seeded tables w4a4, qat, ptq, lrqat and states
(tools/results/units.py and the table modules), run by test_results.py
(make results-test):

- without the binary: hashes and model keys (the tiny tables share their
  base models and FP fine-tunes), when a unit is done, borrowing's
  conditions, derived configs, bad input, and each table's rendering of
  designed results (missing rows as missing, stale ones left out), checked
  against paired intervals and shares computed here from the result files
  with numpy and closed-form t quantiles (not stats.py);
- through ./bin/qat (make build first; a missing binary fails): a --smoke
  run of each table with 2 seeds in a temporary root (a subset of the rows
  for the larger tables, to stay near three minutes on 2 cores), then a
  second run that runs nothing, a changed recipe that reruns exactly the
  unit it changes, and the rendered section: every row of the table, and
  every paired difference, interval and verdict equal to the independent
  computation from the result files."""
import contextlib
import io
import math
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrqat  # noqa: E402
import ptq  # noqa: E402
import qat  # noqa: E402
import states  # noqa: E402
import units  # noqa: E402
import w4a4  # noqa: E402

SPECS = {"w4a4": w4a4, "qat": qat, "ptq": ptq, "lrqat": lrqat, "states": states}
NO = "no measurable difference"
# the header of each table's first table (per row: label, [control,] seeds)
# and of its paired table
HEADER = {name: "| row | seeds |" for name in SPECS}
HEADER["w4a4"] = "| row | control | seeds |"
PAIRED = {name: "| row | paired with |" for name in SPECS}
PAIRED.update(w4a4="| row | control | pairs |", qat="| row | reference | pairs |")
# the verdict of a paired row whose interval excludes 0: VERDICT % "lower"
VERDICT = {name: "%s loss" for name in SPECS}
VERDICT["w4a4"] = "%s loss than the control"


def t975(df):
    """The 0.975 quantile of Student's t in closed form: df 1 is the
    Cauchy distribution (tan), df 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    p = 0.975
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    raise ValueError(f"no closed form for df {df}")


def indep_interval(xs):
    """(mean, lo, hi) with numpy; lo, hi None for one value."""
    xs = np.array(xs, dtype=float)
    m = float(xs.mean())
    if len(xs) < 2:
        return m, None, None
    h = t975(len(xs) - 1) * float(xs.std(ddof=1)) / math.sqrt(len(xs))
    return m, m - h, m + h


def results(root, table):
    """row -> seed -> metrics, read from the result files themselves."""
    out = {}
    tdir = os.path.join(root, table)
    for name in os.listdir(tdir):
        if name.endswith(".json"):
            r = units.read_json(os.path.join(tdir, name))
            out.setdefault(r["row"], {})[r["seed"]] = r["metrics"]
    return out


def table_rows(text, header):
    """label -> cells of the markdown table whose header starts so."""
    lines = text.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith(header))
    out = {}
    for l in lines[i + 2:]:
        if not l.startswith("| "):
            break
        cells = [c.strip() for c in l.strip()[1:-1].split("|")]
        out[cells[0]] = cells
    return out


class Checks:
    """Assertions on a rendered section against the result files."""

    def check_paired(self, text, header, spec, model, res, *, ratio_col=None, share_col=None, verdict="%s loss"):
        """Every row with a pair: pairs, Δ, interval and verdict from the
        result files; NO exactly when the interval holds 0. Returns how
        many verdicts were NO and how many were not."""
        rows = {r["id"]: r for r in spec.rows(model)}
        cells = table_rows(text, header)
        seen = {True: 0, False: 0}
        for rid, row in rows.items():
            if not row.get("pair") or row.get("measure"):
                continue
            c = cells[row["label"]]
            a, b = res.get(rid, {}), res.get(row["pair"], {})
            seeds = sorted(set(a) & set(b))
            self.assertEqual(c[2], str(len(seeds)), rid)
            if not seeds:
                self.assertEqual(c[5], "missing", rid)
                continue
            m, lo, hi = indep_interval([a[s]["val_loss"] - b[s]["val_loss"] for s in seeds])
            self.assertEqual(c[3], f"{m:+.4f}", rid)
            if lo is None:
                self.assertEqual(c[5], "one pair: no interval", rid)
                continue
            self.assertEqual(c[4], f"{lo:+.4f} to {hi:+.4f}", rid)
            holds = lo <= 0 <= hi
            seen[holds] += 1
            self.assertEqual(c[5] == NO, holds, f"{rid}: {c[5]} with {lo} to {hi}")
            self.assertEqual(c[5], NO if holds else verdict % ("higher" if m > 0 else "lower"), rid)
            if ratio_col is not None and row.get("ratio"):
                ks = [s for s in seeds if a[s]["kl_mean"] > 0 and b[s]["kl_mean"] > 0]
                lm, llo, lhi = indep_interval([math.log(b[s]["kl_mean"] / a[s]["kl_mean"]) for s in ks])
                self.assertEqual(c[ratio_col], f"{math.exp(lm):.2f}x", rid)
                self.assertEqual(c[ratio_col + 1], f"{math.exp(llo):.2f} to {math.exp(lhi):.2f}", rid)
                kholds = llo <= 0 <= lhi
                self.assertEqual(c[ratio_col + 2] == NO, kholds, rid)
                seen[kholds] += 1
            if share_col is not None and row.get("rtn"):
                r, f = res.get(row["rtn"], {}), res.get("fp", {})
                sh = [1 - (a[s]["val_loss"] - b[s]["val_loss"]) / (r[s]["val_loss"] - f[s]["val_loss"])
                      for s in seeds if s in r and s in f and r[s]["val_loss"] > f[s]["val_loss"]]
                if sh:
                    sm, slo, shi = indep_interval(sh)
                    self.assertEqual(c[share_col], f"{100 * sm:.0f}%", rid)
                    if slo is not None:
                        self.assertEqual(c[share_col + 1], f"{100 * slo:.0f}% to {100 * shi:.0f}%", rid)
        return seen

    def check_all_rows(self, text, spec, model, header):
        cells = table_rows(text, header)
        for row in spec.rows(model):
            if not row.get("measure"):
                self.assertIn(row["label"], cells, row["id"])
        prov = table_rows(text, "| row | seed 1 |")
        self.assertEqual(set(prov), {r["id"] for r in spec.rows(model)})
        self.assertNotRegex(text.lower(), r"\bnan\b")


def write_result(u, metrics, commit="abc"):
    units.write_json(u.result_path, {"commit": commit, "config_hash": u.hash, "row": u.id, "seed": u.seed, "metrics": metrics})


class Spec(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def units(self, spec, model="tiny", seeds=(1, 2, 3), smoke=False, rows=None):
        ids = units.closure(spec.rows(model), rows or [r["id"] for r in spec.rows(model)])
        return {(u.id, u.seed): u for u in units.units_for(spec, model, list(seeds), ids, units.Mode(smoke), self.root)}

    def test_hash_and_keys(self):
        for smoke in (False, True):
            us = {n: self.units(s, smoke=smoke) for n, s in SPECS.items()}
            # the hash covers the table; the model key does not
            for n in SPECS:
                self.assertEqual(len({u.hash for u in us[n].values()}), len(us[n]), n)
            for seed in (1, 2, 3):
                keys = {us[n][("fp", seed)].model_key for n in SPECS}
                self.assertEqual(len(keys), 1, f"base models of seed {seed} differ")
                self.assertEqual(len({us[n][("ft-fp", seed)].model_key for n in ("w4a4", "qat", "ptq", "lrqat")}), 1)
                self.assertNotEqual(us["qat"][("fp", seed)].hash, us["ptq"][("fp", seed)].hash)
            self.assertNotEqual(us["qat"][("fp", 1)].model_key, us["qat"][("fp", 2)].model_key)
            # a row started from another follows its model key
            self.assertNotEqual(us["qat"][("ft-fp", 1)].model_key, us["qat"][("ft-fp", 2)].model_key)
        full, smoke = self.units(qat), self.units(qat, smoke=True)
        self.assertFalse({u.hash for u in full.values()} & {u.hash for u in smoke.values()})
        # a unit's hash follows the hashes of the units it needs, its model
        # key the keys of those it starts from
        w = self.units(w4a4, seeds=(1,), rows=["had-qat"])
        self.assertEqual(list(w), [("fp", 1), ("ft-fp", 1), ("had-qat", 1)])
        self.assertEqual(w[("had-qat", 1)].recipe["deps"], {"fp": w[("fp", 1)].hash, "ft-fp": w[("ft-fp", 1)].hash})
        self.assertEqual(w[("had-qat", 1)].model_key, units.model_key(w[("had-qat", 1)].recipe, {"fp": w[("fp", 1)].model_key}))
        # the hash covers the YAML file (each model's own) and the generated rules
        u = full[("qat-w4a4", 1)]
        self.assertEqual(u.recipe["files"], {"configs/llama-w4a4.yaml": units.sha256_file("configs/llama-w4a4.yaml")})
        n = self.units(w4a4, "nano", seeds=(1,), rows=["actreg-gptq"])
        self.assertEqual(n[("actreg", 1)].recipe["files"],
                         {"configs/nano-w4a4-actreg.yaml": units.sha256_file("configs/nano-w4a4-actreg.yaml")})
        self.assertIn("{dep:actreg}", n[("actreg-gptq", 1)].recipe["ptq"])
        p = self.units(ptq)[("gptq-w4a16-g64", 1)]
        self.assertEqual(p.recipe["gen"]["rules.json"][0]["weights"]["group_size"], 64)
        self.assertIn("{file:rules.json}", p.recipe["ptq"])
        # once rows: the first seed only
        lr = self.units(lrqat, seeds=(2, 1))
        self.assertIn(("mem-base-qat", 2), lr)
        self.assertNotIn(("mem-base-qat", 1), lr)
        # ptq-small evaluates on 16 batches, its smoke run shrinks the model
        sm = self.units(ptq, "small", seeds=(1,))
        self.assertEqual(sm[("fp", 1)].recipe["eval"]["flags"], ["--seq", "256", "--batches", "16"])
        self.assertIn("train.steps=1500", sm[("fp", 1)].recipe["train"]["set"])
        sms = self.units(ptq, "small", seeds=(1,), smoke=True)
        self.assertIn("model.layers=2", sms[("qat-gptq-w4a8-qqq", 1)].recipe["train"]["set"])

    def test_borrow(self):
        # a w4a4-tiny result of the same commit, tree and data: its model
        # is taken; anything different, not
        wu = self.units(w4a4, seeds=(1,), rows=["fp"])[("fp", 1)]
        mine = self.units(qat, seeds=(1,), rows=["fp"])[("fp", 1)]
        ctx = units.Context(self.root, "c0ffee", None)
        ctx.manifest["sotu"] = "m" * 64
        model = os.path.join(self.root, "w4a4-tiny", "runs", "fp", "model")
        os.makedirs(model)
        res = {"commit": "c0ffee", "tree_diff_sha256": None, "seed": 1, "config_hash": wu.hash, "recipe": wu.recipe,
               "model_key": wu.model_key, "data_manifest_sha256": "m" * 64, "model_dir": model, "table": "w4a4-tiny",
               "row": "fp", "metrics": {"val_loss": 4.2, "tokens_per_s": 5000.0}}
        units.write_json(wu.result_path, res)
        self.assertIsNone(units.find_borrow(mine, ctx))  # the model is not finished
        with open(os.path.join(model, "latest"), "w") as f:
            f.write("ckpt-0000001\n")
        got = units.find_borrow(mine, ctx)
        self.assertEqual(got["model_dir"], model)
        self.assertEqual(got["measured"], {"tokens_per_s": 5000.0})
        self.assertEqual(got["config_hash"], wu.hash)
        for key, val in (("commit", "c0ffe1"), ("tree_diff_sha256", "d" * 64), ("data_manifest_sha256", "n" * 64), ("seed", 2),
                         ("model_key", "k" * 64)):
            units.write_json(wu.result_path, dict(res, **{key: val}))
            self.assertIsNone(units.find_borrow(mine, ctx), key)
        # a recipe edited after the fact does not match its hash
        units.write_json(wu.result_path, dict(res, recipe=dict(wu.recipe, seed=9)))
        self.assertIsNone(units.find_borrow(mine, ctx))
        # another seed's or row's unit never borrows it
        units.write_json(wu.result_path, res)
        other = self.units(qat, seeds=(2,), rows=["fp"])[("fp", 2)]
        self.assertIsNone(units.find_borrow(other, ctx))
        # a smoke unit has another key
        smoke = self.units(qat, seeds=(1,), rows=["fp"], smoke=True)[("fp", 1)]
        self.assertIsNone(units.find_borrow(smoke, ctx))

    def test_derive(self):
        u = self.units(lrqat, seeds=(1,))[("lrqat-g64", 1)]
        out = os.path.join(self.root, "c.yaml")
        units.derived_config(u, out)
        text = units.read(out)
        base = units.read("configs/llama-w4-lrqat.yaml")
        self.assertEqual(text, base.replace("granularity: channel", "granularity: group, group_size: 64"))
        m = self.units(lrqat, seeds=(1,))[("mem-small-lrqat", 1)]
        units.derived_config(m, out)
        self.assertTrue(units.read(out).endswith("lora:\n  method: lr-qat\n  rank: 32\n  alpha: 32\n"))
        u.recipe["train"]["derive"] = {"replace": [["no such text", "x"]]}
        with self.assertRaises(units.InputError) as e:
            units.derived_config(u, out)
        self.assertIn("no such text", str(e.exception))

    def test_done(self):
        # done: a result of this commit, tree and recipe, and the model of
        # a unit that makes one still on disk
        us = self.units(w4a4, seeds=(1,), rows=["rtn"])
        u, fp = us[("rtn", 1)], us[("fp", 1)]  # rtn evaluates fp's model: none of its own
        self.assertFalse(u.done("abc", None))
        write_result(u, {"val_loss": 4.3})
        self.assertTrue(u.done("abc", None))
        self.assertFalse(u.done("abd", None))  # another commit: run again
        self.assertFalse(u.done("abc", "d" * 64))  # another tree
        units.write_json(u.result_path, dict(u.result(), config_hash="0" * 64))
        self.assertFalse(u.done("abc", None))  # another recipe
        model = os.path.join(self.root, "model")
        units.write_json(fp.result_path, {"commit": "abc", "config_hash": fp.hash, "model_dir": model, "metrics": {}})
        self.assertFalse(fp.done("abc", None))  # its model is gone
        os.makedirs(model)
        with open(os.path.join(model, "latest"), "w") as f:
            f.write("ckpt-0000001\n")
        self.assertTrue(fp.done("abc", None))

    def test_bad_input(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(units.main(qat, ["render", "nosuch"]), 2)
            self.assertEqual(units.main(qat, ["render", "tiny", "--seeds", "1,1"]), 2)
            self.assertEqual(units.main(ptq, ["render", "tiny", "--rows", "nosuch"]), 2)
            self.assertEqual(units.main(w4a4, ["render", "tiny", "--seeds", "1,x"]), 2)
        self.assertIn("model 'nosuch'", err.getvalue())
        self.assertIn("unknown row 'nosuch'", err.getvalue())
        self.assertIn("w4a4.py: --seeds '1,x'", err.getvalue())
        u = self.units(qat, seeds=(1,), rows=["fp"])[("fp", 1)]
        os.makedirs(os.path.dirname(u.result_path))
        with open(u.result_path, "w") as f:
            f.write("[]")
        with self.assertRaises(units.InputError) as e:
            u.result()
        self.assertIn(u.result_path, str(e.exception))
        bad = [dict(id="a", label="a", eval_of="b"), dict(id="b", label="b", train=("configs/tiny.yaml", []))]
        with self.assertRaises(units.InputError):
            units.check_rows(bad, "test")  # a dependency after its row
        with self.assertRaises(units.InputError):
            units.check_rows([dict(id="a", label="a", once=True, train=("configs/tiny.yaml", []))], "test")

    def test_log_facts(self):
        text = ("model: 4262144 parameters (3213568 non-embedding), optimizer state (int8) 1.4 MB, 0.32 bytes per parameter;\n"
                "parameters: 641536 trainable, 1050880 frozen float32 + 3211264 frozen int8; bytes: ...\n")
        self.assertEqual(units.log_facts(text), {"optimizer_state": "int8", "optimizer_mb": 1.4, "optimizer_bytes_per_param": 0.32,
                                                 "trainable_params": 641536, "frozen_f32_params": 1050880,
                                                 "frozen_int8_params": 3211264})

    def test_log_ratio(self):
        num, den = {1: 0.004, 2: 0.005, 3: 0.0036, 4: 1.0}, {1: 0.001, 2: 0.002, 3: 0.0009}
        seeds, g, lo, hi, _ = units.log_ratio(num, den)
        self.assertEqual(seeds, [1, 2, 3])
        logs = np.log(np.array([4.0, 2.5, 4.0]))
        self.assertAlmostEqual(g, float(np.exp(logs.mean())), places=12)
        h = t975(2) * logs.std(ddof=1) / math.sqrt(3)
        self.assertAlmostEqual(lo, float(np.exp(logs.mean() - h)), places=10)
        self.assertAlmostEqual(hi, float(np.exp(logs.mean() + h)), places=10)


class Render(unittest.TestCase, Checks):
    """Each table rendered from designed results: one paired difference
    far from 0, one around it, missing and stale units."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def make(self, spec, model, loss, kl=None, extra=None, seeds=(1, 2, 3)):
        """Results for every unit: loss(row, seed) (None: no result)."""
        ids = [r["id"] for r in spec.rows(model)]
        us = units.units_for(spec, model, list(seeds), ids, units.Mode(False), self.root)
        for u in us:
            v = loss(u.id, u.seed)
            if v is None:
                continue
            m = {"val_loss": v, "perplexity": math.exp(v), "bits_per_byte": 1.0, "tokens": 1000}
            if u.row.get("kl"):
                m.update(kl_mean=kl(u.id, u.seed) if kl else 0.01, kl_p99=0.05, top1=0.9)
            if u.row.get("measure"):
                m = {"train_peak_rss_mib": 100.0 + len(u.id), "tokens_per_s": 1000.0 + len(u.id), "optimizer_mb": 1.0}
            m.update((extra or {}).get(u.id, {}))
            write_result(u, m)
        return us

    def test_qat(self):
        noise = {1: 0.001, 2: -0.002, 3: 0.0015}
        kurt = {f"model.layers.{i}.{k}": 3.0 + i for i in range(4) for k in ("self_attn.q_proj", "self_attn.o_proj",
                                                                          "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj")}

        def loss(rid, s):
            if rid == "qat-fp8" and s == 3:
                return None  # missing
            base = 4.2 + 0.01 * s
            return {"fp": base, "ft-fp": base - 0.02, "rtn-w4a4": base + 0.05 + 0.01 * s,
                    "qat-w4a4": base - 0.02 + 0.02 + noise[s] * 3}.get(rid, base + noise[s])
        us = self.make(qat, "tiny", loss, extra={"fp": {"kurtosis": kurt}, "qat-w4a4": {"kurtosis": kurt}})
        text = qat.render(units.View(us, False, "tools/results/qat.sh tiny"))
        res = results(self.root, "qat-tiny")
        seen = self.check_paired(text, "| row | reference | pairs |", qat, "tiny", res, share_col=6)
        self.assertTrue(seen[True] and seen[False], seen)
        self.check_all_rows(text, qat, "tiny", "| row | seeds |")
        self.assertIn("| QAT fp8 | 2/3 |", text)
        self.assertIn("qat-fp8 seed 3", text.split("Missing")[1])
        # RTN w4a4 is measurably worse than FP32: its line says so
        self.assertIn("- w4a4: RTN against FP32 higher loss", text)
        # kurtosis: mean ± sd over seeds; an unrun column is missing
        k = table_rows(text, "| layer input |")
        self.assertEqual(k["layer 2 mlp.down_proj (down)"][1:], ["5.00 ± 0.00", "5.00 ± 0.00", "missing"])
        self.assertEqual(len(k), 4 * 4 + 1)

    def test_w4a4(self):
        fp = {1: 4.20, 2: 4.25, 3: 4.22}
        rtn_cost = {1: 0.10, 2: 0.12, 3: 0.08}

        def loss(rid, s):
            return {"fp": fp[s], "rtn": fp[s] + rtn_cost[s],
                    "gptq": fp[s] + 0.5 * rtn_cost[s] + 0.001 * s,  # about half removed
                    "ft-fp": fp[s] - 0.02,
                    "qat": fp[s] - 0.02 + (0.001, -0.002, 0.0015)[s - 1],  # noise around its control
                    "actreg": 4.5 if s == 1 else None,  # one seed only
                    "had-rtn": 1.0 if s == 1 else None}.get(rid)  # made stale below
        us = {(u.id, u.seed): u for u in self.make(w4a4, "tiny", loss)}
        stale = us[("had-rtn", 1)]
        units.write_json(stale.result_path, dict(stale.result(), config_hash="f" * 64))  # another recipe's result
        text = w4a4.render(units.View(list(us.values()), False, "tools/results/w4a4.sh tiny"))
        res = results(self.root, "w4a4-tiny")
        del res["had-rtn"]  # left out: the render must not use it
        seen = self.check_paired(text, "| row | control | pairs |", w4a4, "tiny", res, share_col=6,
                                 verdict=VERDICT["w4a4"])
        self.assertTrue(seen[True] and seen[False], seen)
        self.check_all_rows(text, w4a4, "tiny", HEADER["w4a4"])
        paired = table_rows(text, "| row | control | pairs |")
        qat_row, gptq = paired["QAT (LSQ weights, per-token minmax inputs)"], paired["GPTQ"]
        self.assertEqual(qat_row[5], NO)
        self.assertEqual(gptq[5], "higher loss than the control")
        # gptq's share: 1 - (0.5c + 0.001 s) / c per seed (checked against
        # numpy above); about half: the goal not met
        self.assertEqual(gptq[8], "not met")
        sh = [1 - (0.5 * rtn_cost[s] + 0.001 * s) / rtn_cost[s] for s in (1, 2, 3)]
        m, lo, hi = indep_interval(sh)
        self.assertIn(f"- GPTQ: share of RTN's degradation removed {100 * m:.0f}% (95% interval {100 * lo:.0f}% to "
                      f"{100 * hi:.0f}%, 3 seeds)", text)
        rm, rlo, rhi = indep_interval([rtn_cost[s] for s in (1, 2, 3)])
        self.assertIn(f"(95% interval {rlo:+.4f} to {rhi:+.4f}: a measurable rise)", text)
        # missing rows are missing, not zero; a stale one is left out and named
        first = table_rows(text, HEADER["w4a4"])
        self.assertEqual(first["Hadamard + GPTQ"][2:5], ["0/3", "missing", "missing"])
        self.assertEqual(first["Hadamard + RTN"][2:4], ["0/3", "missing"])
        self.assertIn("had-rtn seed 1", text.split("Left out")[1])
        self.assertEqual(paired["clip + output kurtosis from scratch, FP weights"][5], "one pair: no interval")
        # QAT is as good as its control: all of RTN's degradation removed
        self.assertEqual(qat_row[5:7], [NO, "100%"])
        self.assertIn("Rows meeting the goal (at least 60% of RTN's degradation removed, interval excluding 0): "
                      "QAT (LSQ weights, per-token minmax inputs) (2 of 7 recipe rows have an interval)", text)
        # provenance: commit and hash of every unit
        self.assertIn(f"| fp | abc {us[('fp', 1)].hash[:10]} | abc {us[('fp', 2)].hash[:10]} |", text)

    def test_w4a4_rtn_not_measurable(self):
        # RTN's degradation is noise: the shares divide by it, and no row
        # is judged against the goal
        d = {1: 0.01, 2: -0.008, 3: 0.004}
        us = self.make(w4a4, "tiny", lambda rid, s: {"fp": 4.2, "rtn": 4.2 + d[s], "gptq": 4.2 + d[s] / 10, "ft-fp": 4.1,
                                                     "qat": 4.1}.get(rid))
        text = w4a4.render(units.View(us, False, "tools/results/w4a4.sh tiny"))
        self.assertEqual(table_rows(text, "| row | control | pairs |")["RTN (qat eval --preset w4a4)"][5], NO)
        self.assertIn("Seed 2: RTN does not raise the loss over FP, so no share there.", text)
        self.assertIn("No row is judged against the goal", text)
        self.assertNotIn("| met |", text)
        self.assertNotIn("Rows meeting the goal", text)

    def test_ptq(self):
        def loss(rid, s):
            if rid.startswith("rtn-"):
                return 4.3 + 0.01 * s
            if rid.startswith("gptq-"):
                return 4.28 + 0.01 * s + 0.001 * (s % 2)
            return 4.25 + 0.01 * s + 0.002 * (-1) ** s

        def kl(rid, s):
            return {"rtn": 0.01, "gptq": 0.002 * (1 + 0.1 * s)}.get(rid.split("-")[0], 0.01 * (1 + 0.3 * (-1) ** s))
        us = self.make(ptq, "tiny", loss, kl)
        text = ptq.render(units.View(us, False, "tools/results/ptq.sh tiny"))
        seen = self.check_paired(text, "| row | paired with |", ptq, "tiny", results(self.root, "ptq-tiny"), ratio_col=8)
        self.assertTrue(seen[True] and seen[False], seen)
        self.check_all_rows(text, ptq, "tiny", "| row | seeds |")

    def test_lrqat_and_states(self):
        def loss(rid, s):
            # LR-QAT 0.02 above full QAT every seed; LoRA-QAT around it
            return 4.25 + 0.01 * s + (0.02 if rid.startswith("lrqat") else 0.002 * (-1) ** s if rid.startswith("loraqat") else 0.0)
        us = self.make(lrqat, "tiny", loss, extra={"qat-channel": {"trainable_params": 4272896},
                                                    "mem-base-qat": {"train_peak_rss_mib": 400.0},
                                                    "mem-base-lrqat": {"train_peak_rss_mib": 100.0}})
        text = lrqat.render(units.View(us, False, "tools/results/lrqat.sh tiny"))
        seen = self.check_paired(text, "| row | paired with |", lrqat, "tiny", results(self.root, "lrqat-tiny"))
        self.assertTrue(seen[True] and seen[False], seen)
        self.check_all_rows(text, lrqat, "tiny", "| row | seeds |")
        mem = table_rows(text, "| config | batch |")
        self.assertEqual(len(mem), 2)  # two configs; the rows by method under them
        self.assertIn("- base: LR-QAT's peak RSS is 25% of full QAT's (one measurement each).", text)
        self.assertIn("| 4,272,896 |", text)
        # int8 around fp32, fp8 0.01 above it every seed
        us = self.make(states, "tiny", lambda rid, s: 4.2 + (0.001 * s if rid.endswith("int8") else 0.0)
                       + (0.01 + 0.0001 * s if rid.endswith("fp8") else 0.0))
        text = states.render(units.View(us, False, "tools/results/states.sh tiny"))
        seen = self.check_paired(text, "| row | paired with |", states, "tiny", results(self.root, "states-tiny"))
        self.assertTrue(seen[True] and seen[False], seen)
        self.check_all_rows(text, states, "tiny", "| row | seeds |")

    def test_unrun(self):
        # nothing run: every row shown as missing, no numbers
        for name, spec in SPECS.items():
            for model in spec.MODELS:
                us = units.units_for(spec, model, [1, 2, 3], [r["id"] for r in spec.rows(model)], units.Mode(False), self.root)
                text = spec.render(units.View(us, False, f"tools/results/{name}.sh {model}"))
                self.check_all_rows(text, spec, model, HEADER[name])
                self.assertIn(f"No unit of this table has finished: run `tools/results/{name}.sh {model}`", text)
                self.assertNotRegex(text, r"\d\.\d{4}")


# the smoke runs: all rows of qat and states, a subset of the others that
# covers each kind of unit (rules file, preset, derived config, QAT from a
# post-training start, a measurement, a borrowed model, a Hadamard rotation
# in ptq and in QAT, a recipe from scratch and the ptq of its model, each
# W4A4 config of nano); leaf: the row whose recipe the test changes
SMOKE = [
    ("qat", "tiny", None, "qat-fp8"),
    ("ptq", "tiny", ["gwq-gptq-w4a16-g64", "rtn-w4a16-g64", "rtn-w4a8-qqq", "qqq-w4a8-qqq", "qat-rtn-w4a8-qqq",
                     "qat-gptq-w4a8-qqq"], "rtn-w4a8-qqq"),
    ("lrqat", "tiny", ["rtn-channel", "qat-channel", "lrqat-channel", "lrqat-g64", "mem-base-lrqat", "speed-lrqat"], "lrqat-g64"),
    ("states", "tiny", None, "scratch-fp8"),
    ("ptq", "small", ["rtn-w4a8-qqq-g128", "qqq-w4a8-qqq-g128", "rtn-w3a16-g128", "gwq-w3a16-g128", "qat-rtn-w3a16-g128",
                      "qat-gwq-w3a16-g128"], "gwq-w3a16-g128"),
    ("w4a4", "tiny", ["rtn", "had-gptq", "qat", "had-qat", "actreg-rtn"], "had-gptq"),
    ("w4a4", "nano", ["rtn", "qat", "actreg-gptq"], "actreg-gptq"),
]
# the column of a table's first table that counts a row's seeds
COUNT_COL = {name: 1 for name in SPECS}
COUNT_COL["w4a4"] = 2


class Changed:
    """A table module with one row's recipe changed (a harmless flag)."""

    def __init__(self, spec, rid):
        self.spec, self.rid = spec, rid
        self.NAME, self.MODELS, self.render = spec.NAME, spec.MODELS, spec.render

    def rows(self, model):
        out = []
        for r in self.spec.rows(model):
            if r["id"] == self.rid:
                r = dict(r)
                if "ptq" in r:
                    r["ptq"] = r["ptq"] + ["--threads", "2"]
                else:
                    r["train"] = (r["train"][0], r["train"][1] + ["train.log_every=2"])
            out.append(r)
        return out


class Smoke(unittest.TestCase, Checks):
    @classmethod
    def setUpClass(cls):
        _, q = units.qat_bin()
        if not os.access(q, os.X_OK):
            raise AssertionError(f"{q}: no qat binary; run make build first")
        cls.tmp = tempfile.mkdtemp(prefix="qat-tables-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def run_units(self, spec, model, rows):
        ids = units.closure(spec.rows(model), rows or [r["id"] for r in spec.rows(model)])
        us = units.units_for(spec, model, [1, 2], ids, units.Mode(True), self.tmp)
        ctx = units.Context(self.tmp, "5m0ke" + "0" * 35, None)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = units.run(us, ctx)
        self.assertEqual(rc, 0, err.getvalue()[-3000:])
        return us, ctx

    def smoke(self, i):
        name, model, rows, leaf = SMOKE[i]
        spec = SPECS[name]
        us, ctx = self.run_units(spec, model, rows)
        self.assertEqual(sorted(ctx.ran), sorted((u.id, u.seed) for u in us))
        self.assertFalse(ctx.failed or ctx.blocked)
        for u in us:
            r = u.result()
            self.assertEqual(r["config_hash"], u.hash)
            if units.makes_model(u.row) and not u.row.get("measure"):
                self.assertTrue(units.model_ready(r["model_dir"]), u.id)
        # resumed: nothing runs again
        _, again = self.run_units(spec, model, rows)
        self.assertEqual(again.ran, [])
        self.assertEqual(len(again.skipped), len(us))
        # a changed recipe reruns that unit and nothing else (no row
        # depends on the leaf)
        _, ch = self.run_units(Changed(spec, leaf), model, rows)
        self.assertEqual(sorted(ch.ran), [(leaf, 1), (leaf, 2)])
        # the section shows every row whatever ran (as the .sh renders it)
        every = units.units_for(spec, model, [1, 2], [r["id"] for r in spec.rows(model)], units.Mode(True), self.tmp)
        # the table's recipe leaves that result out, and runs it again
        stale = spec.render(units.View(every, True, units.command(spec, model, True))).split("Left out")[1]
        self.assertIn(f"{leaf} seed 1, {leaf} seed 2", stale)
        _, back = self.run_units(spec, model, rows)
        self.assertEqual(sorted(back.ran), [(leaf, 1), (leaf, 2)])
        # the section: every row (those not run as missing), the paired
        # intervals and verdicts as computed here from the result files
        text = spec.render(units.View(every, True, units.command(spec, model, True)))
        self.check_all_rows(text, spec, model, HEADER[name])
        self.assertNotIn("Left out", text)
        res = results(self.tmp, f"{name}-{model}")
        self.check_paired(text, PAIRED[name], spec, model, res, ratio_col=8 if name == "ptq" else None,
                          share_col=6 if name in ("qat", "w4a4") else None, verdict=VERDICT[name])
        if rows:
            missing = [r for r in spec.rows(model) if r["id"] not in units.closure(spec.rows(model), rows)]
            for r in missing:
                if not r.get("measure"):
                    self.assertRegex(table_rows(text, HEADER[name])[r["label"]][COUNT_COL[name]], r"^0/[12]$", r["id"])
        return us, ctx

    def test_1_qat(self):
        us, ctx = self.smoke(0)
        self.assertEqual(ctx.borrowed, [])

    def test_2_ptq_tiny(self):
        # its base models and controls are qat-tiny's (same smoke recipe)
        _, ctx = self.smoke(1)
        self.assertEqual(sorted(ctx.borrowed), [("fp", 1), ("fp", 2), ("ft-fp", 1), ("ft-fp", 2)])

    def test_3_lrqat(self):
        _, ctx = self.smoke(2)
        self.assertIn(("fp", 1), ctx.borrowed)
        # the memory measurement keeps no model
        r = units.read_json(os.path.join(self.tmp, "lrqat-tiny", "mem-base-lrqat-s1.json"))
        self.assertGreater(r["metrics"]["train_peak_rss_mib"], 10)
        self.assertIsNone(r["model_dir"])
        self.assertFalse(os.path.exists(os.path.join(units.REPO, r["workdir"], "model")))

    def test_4_states(self):
        us, _ = self.smoke(3)
        bpp = {u.id: u.result()["metrics"]["optimizer_bytes_per_param"] for u in us if u.id.startswith("scratch-")}
        self.assertEqual(bpp["scratch-fp32"], 8.0)
        self.assertLess(bpp["scratch-int8"], 2.2)

    def test_5_ptq_small(self):
        self.smoke(4)

    def test_6_w4a4_tiny(self):
        # its base models, controls and QAT fine-tunes are qat-tiny's (same
        # smoke recipes: qat-w4a4 there)
        _, ctx = self.smoke(5)
        self.assertEqual(sorted(ctx.borrowed), [("fp", 1), ("fp", 2), ("ft-fp", 1), ("ft-fp", 2), ("qat", 1), ("qat", 2)])

    def test_7_w4a4_nano(self):
        _, ctx = self.smoke(6)
        self.assertEqual(ctx.borrowed, [])


if __name__ == "__main__":
    unittest.main()
