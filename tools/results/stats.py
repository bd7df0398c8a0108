"""Statistics of the results tables: Student-t quantiles (no scipy), mean
and standard deviation over seeds, paired differences to a control with a
95% t interval, and the share of RTN's degradation a recipe removes.

Every function takes plain lists of floats (one value per seed) and
returns plain numbers, so the table generator and the tests
(test_results.py) call the same code."""
import math

# the verdict for a paired difference whose interval holds 0
NO_DIFFERENCE = "no measurable difference"


def _betacf(a, b, x):
    """The continued fraction of the incomplete beta function (modified
    Lentz's method, Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta ({a}, {b}, {x}) did not converge")


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x = {x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # the fraction converges fast on the side of the mean; the other side
    # by symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom {df} must be positive")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t with df degrees of freedom, by
    bisection of t_cdf (monotone) to double precision."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p = {p} outside (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    return 0.5 * (lo + hi)


def mean_sd(xs):
    """Mean and sample standard deviation (n-1); sd is None for one value."""
    n = len(xs)
    if n == 0:
        return None, None
    m = sum(xs) / n
    if n < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))


def interval(xs, level=0.95):
    """Mean of xs and its two-sided t interval at level: (mean, lo, hi);
    lo and hi are None with fewer than two values."""
    m, sd = mean_sd(xs)
    if sd is None:
        return m, None, None
    h = t_quantile(0.5 + level / 2.0, len(xs) - 1) * sd / math.sqrt(len(xs))
    return m, m - h, m + h


def paired(row, control, level=0.95):
    """Paired differences row[s] - control[s] over the seeds both have
    (dicts seed -> value): (seeds, mean, lo, hi)."""
    seeds = sorted(set(row) & set(control))
    d = [row[s] - control[s] for s in seeds]
    m, lo, hi = interval(d, level)
    return seeds, m, lo, hi


def verdict(mean, lo, hi, lower="lower", higher="higher"):
    """The words for a paired difference: NO_DIFFERENCE when the interval
    holds 0, else the direction; None without an interval."""
    if lo is None:
        return None
    if lo <= 0.0 <= hi:
        return NO_DIFFERENCE
    return higher if mean > 0 else lower


def share_removed(recipe, its_control, rtn, fp):
    """The share of RTN's degradation a recipe removes, per seed:
    1 - (L_recipe - L_its_control) / (L_rtn - L_fp), over the seeds all
    four have (dicts seed -> loss). Seeds where RTN does not raise the loss
    (L_rtn <= L_fp) have no share and are returned apart.
    Returns (shares: dict seed -> share, undefined: list of seeds)."""
    shares, undefined = {}, []
    for s in sorted(set(recipe) & set(its_control) & set(rtn) & set(fp)):
        deg = rtn[s] - fp[s]
        if deg <= 0:
            undefined.append(s)
            continue
        shares[s] = 1.0 - (recipe[s] - its_control[s]) / deg
    return shares, undefined


def meets_goal(mean, lo, goal=0.6):
    """The issue's goal for a recipe's share: at least goal on average
    with an interval that excludes 0 (lo > 0); None without an interval."""
    if lo is None:
        return None
    return mean >= goal and lo > 0.0
