#!/usr/bin/env python3
"""Tests of the results framework (make results-test, part of make test):
Student-t quantiles against published values, the paired interval against
R's t.test on Student's sleep data, the interval's coverage by simulation,
the verdict and share arithmetic and the section writer: a few seconds, no
qat binary. Then the tables of test_tables.py (w4a4, qat, ptq, lrqat,
states): their hashing and rendering, and smoke runs through ./bin/qat
(make build first), about three minutes on 2 cores."""
import math
import os
import random
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import section  # noqa: E402
import stats  # noqa: E402
from test_tables import Render, Smoke, Spec  # noqa: E402,F401  (run here by make results-test)


class TQuantile(unittest.TestCase):
    # two-sided critical values from the standard t table (e.g. NIST/SEMATECH
    # e-Handbook 1.3.6.7.2), to the 3 decimals tables print, and R's
    # qt(p, df) to 9 digits
    TABLE = [
        (0.975, 1, 12.706204736), (0.975, 2, 4.302652730), (0.975, 3, 3.182446305), (0.975, 4, 2.776445105),
        (0.975, 5, 2.570581836), (0.975, 9, 2.262157163), (0.975, 10, 2.228138852), (0.975, 30, 2.042272456),
        (0.975, 100, 1.983971519), (0.995, 2, 9.924843201), (0.995, 5, 4.032142984), (0.95, 2, 2.919985580),
        (0.95, 7, 1.894578605), (0.9, 1, 3.077683537), (0.999, 3, 10.214531852),
    ]

    def test_table(self):
        for p, df, want in self.TABLE:
            self.assertAlmostEqual(stats.t_quantile(p, df), want, delta=2e-9 * want, msg=f"p={p} df={df}")

    def test_symmetry_and_cdf(self):
        self.assertAlmostEqual(stats.t_quantile(0.025, 4), -2.776445105, places=8)
        self.assertEqual(stats.t_quantile(0.5, 3), 0.0)
        # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi
        for t in (-3.0, -0.5, 0.1, 2.0, 40.0):
            self.assertAlmostEqual(stats.t_cdf(t, 1), 0.5 + math.atan(t) / math.pi, places=12)
        # df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        for t in (-2.0, 0.3, 5.0):
            self.assertAlmostEqual(stats.t_cdf(t, 2), 0.5 + t / (2 * math.sqrt(2 + t * t)), places=12)
        # large df approaches the normal quantile 1.959963985
        self.assertAlmostEqual(stats.t_quantile(0.975, 1e7), 1.959963985, places=5)


class Intervals(unittest.TestCase):
    def test_sleep_data(self):
        # Student's sleep data (Cushny and Peebles): extra hours of sleep
        # of 10 patients under two drugs. R: t.test(extra ~ group, data =
        # sleep, paired = TRUE) gives mean difference -1.58, 95% CI
        # -2.4598858 to -0.7001142.
        g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
        g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
        seeds, m, lo, hi = stats.paired(dict(enumerate(g1)), dict(enumerate(g2)))
        self.assertEqual(seeds, list(range(10)))
        self.assertAlmostEqual(m, -1.58, places=12)
        self.assertAlmostEqual(lo, -2.4598858, places=6)
        self.assertAlmostEqual(hi, -0.7001142, places=6)
        self.assertEqual(stats.verdict(m, lo, hi), "lower")

    def test_pairs_only_common_seeds(self):
        seeds, m, lo, hi = stats.paired({1: 1.0, 2: 2.0, 3: 4.0}, {2: 1.0, 3: 1.0, 4: 9.0})
        self.assertEqual(seeds, [2, 3])
        self.assertAlmostEqual(m, 2.0)
        # two differences 1 and 3: sd sqrt(2), t(0.975, 1) = 12.7062
        self.assertAlmostEqual(hi - m, 12.706204736 * math.sqrt(2) / math.sqrt(2), places=6)
        self.assertEqual(stats.paired({1: 1.0}, {1: 0.5})[2:], (None, None))

    def test_coverage(self):
        # 95% intervals of 3 normal draws hold the true mean 95% of the
        # time; the normal quantile (1.96) in place of t's would give 0.88
        rng = random.Random(7)
        trials, hit = 6000, 0
        for _ in range(trials):
            xs = [rng.gauss(0.3, 2.0) for _ in range(3)]
            _, lo, hi = stats.interval(xs)
            hit += lo <= 0.3 <= hi
        self.assertAlmostEqual(hit / trials, 0.95, delta=0.012)

    def test_verdict(self):
        self.assertEqual(stats.verdict(0.01, -0.002, 0.022), stats.NO_DIFFERENCE)
        self.assertEqual(stats.NO_DIFFERENCE, "no measurable difference")
        self.assertEqual(stats.verdict(0.01, 0.002, 0.018), "higher")
        self.assertEqual(stats.verdict(-0.01, -0.018, -0.002), "lower")
        self.assertIsNone(stats.verdict(0.01, None, None))

    def test_mean_sd(self):
        self.assertEqual(stats.mean_sd([]), (None, None))
        self.assertEqual(stats.mean_sd([2.0]), (2.0, None))
        m, sd = stats.mean_sd([1.0, 2.0, 4.0])
        self.assertAlmostEqual(m, 7 / 3)
        self.assertAlmostEqual(sd, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))


class Share(unittest.TestCase):
    def test_share(self):
        fp = {1: 4.00, 2: 4.10, 3: 4.20}
        rtn = {1: 4.10, 2: 4.30, 3: 4.20}  # seed 3: RTN costs nothing
        ctl = {1: 3.95, 2: 4.05, 3: 4.15}
        rec = {1: 3.97, 2: 4.15, 3: 4.16}
        sh, undefined = stats.share_removed(rec, ctl, rtn, fp)
        self.assertEqual(undefined, [3])
        self.assertAlmostEqual(sh[1], 1 - 0.02 / 0.10)
        self.assertAlmostEqual(sh[2], 1 - 0.10 / 0.20)
        # RTN itself against FP removes nothing
        self.assertAlmostEqual(stats.share_removed(rtn, fp, rtn, fp)[0][1], 0.0)

    def test_goal(self):
        self.assertTrue(stats.meets_goal(0.7, 0.1))
        self.assertFalse(stats.meets_goal(0.7, -0.1))  # interval holds 0
        self.assertFalse(stats.meets_goal(0.5, 0.4))
        self.assertIsNone(stats.meets_goal(0.7, None))


class Section(unittest.TestCase):
    def test_replace_and_add(self):
        doc = "# T\n\nintro\n\n<!-- BEGIN generated: a (cmd a) -->\nold\n<!-- END generated: a -->\n\n## rest\nkept\n"
        out = section.replace(doc, "a", "new\nlines\n", "cmd a")
        self.assertEqual(out, doc.replace("old", "new\nlines"))
        # a missing section goes at the end, after one blank line
        out2 = section.replace(out, "b", "B", "cmd b")
        self.assertEqual(out2, out + "\n<!-- BEGIN generated: b (cmd b) -->\nB\n<!-- END generated: b -->\n")
        out3 = section.replace(doc, "c", "C")
        self.assertEqual(out3, doc + "\n<!-- BEGIN generated: c -->\nC\n<!-- END generated: c -->\n")
        # replacing again changes nothing else
        self.assertEqual(section.replace(out2, "b", "B", "cmd b"), out2)

    def test_malformed(self):
        for doc in ["<!-- BEGIN generated: a -->\nx\n", "<!-- END generated: a -->\n<!-- BEGIN generated: a -->\n",
                    "<!-- BEGIN generated: a -->\n<!-- END generated: a -->\n<!-- BEGIN generated: a -->\n<!-- END generated: a -->\n"]:
            with self.assertRaises(section.SectionError):
                section.replace(doc, "a", "y")
        # another section's markers are not this one's
        self.assertIn("y", section.replace("<!-- BEGIN generated: ab -->\n<!-- END generated: ab -->\n", "a", "y"))


if __name__ == "__main__":
    unittest.main()
