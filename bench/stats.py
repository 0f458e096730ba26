"""Summary statistics of repeated measurements, and the comparison of two runs.

Each cell reports the median of its timed runs with two robust spreads: the median
absolute deviation (MAD) and the interquartile range (IQR). A cell is *noisy* when its
robust standard deviation (1.4826 x MAD, the stdev it would have if the runs were
normal) exceeds 10% of the median. Two runs of the same cell differ *significantly*
when Welch's t-test rejects equal means at 95% (the test pyperf's compare_to uses).
"""

from __future__ import annotations

import math
import statistics

#: A result whose robust spread (1.4826 x MAD) exceeds this fraction of its median is
#: flagged as noisy.
SPREAD_LIMIT = 0.10
#: MAD x this estimates the standard deviation of normally distributed runs.
MAD_TO_STDEV = 1.4826

#: Two-sided 95% critical values of Student's t by degrees of freedom (1..30); past 30
#: the normal 1.96 is close enough.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mad(values: list[float]) -> float:
    """Median absolute deviation from the median."""
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


def iqr(values: list[float]) -> float:
    """Interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


#: Runs further than this many robust standard deviations from the median (Iglewicz and
#: Hoaglin's modified z-score of 3.5), and further than :data:`SPREAD_LIMIT` of it, are
#: outliers: a run a few percent off a very tight cell is no news
OUTLIER_SDS = 3.5


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the median from order statistics:
    ``(low, high, confidence)``, the narrowest ``[x_(k), x_(n-k+1)]`` whose confidence
    (from the binomial law of the runs below the median) is at least *level*, or the
    whole range when even that falls short (with 5 runs: 93.75%)."""
    x = sorted(values)
    n = len(x)
    if n < 2:
        return x[0], x[0], 0.0
    # P(x_(k) <= median <= x_(n-k+1)) = 1 - 2 P(Binomial(n, 1/2) <= k - 1)
    best = (x[0], x[-1], 0.0)
    cdf = 0.0
    for k in range(1, n // 2 + 1):
        cdf += math.comb(n, k - 1) * 0.5**n
        conf = 1.0 - 2.0 * cdf
        if conf < level and k > 1:
            break
        best = (x[k - 1], x[n - k], conf)
        if conf < level:
            break
    return best


def outliers(values: list[float]) -> list[int]:
    """Indices of the runs further than :data:`OUTLIER_SDS` robust standard deviations
    (1.4826 x MAD) and than :data:`SPREAD_LIMIT` of the median from the median: flagged,
    never dropped."""
    med = statistics.median(values)
    limit = max(OUTLIER_SDS * MAD_TO_STDEV * mad(values), SPREAD_LIMIT * abs(med))
    return [i for i, v in enumerate(values) if abs(v - med) > limit]


def summarize(values: list[float], prefix: str = "gbps") -> dict:
    """Median, MAD (the spread shown everywhere), a confidence interval of the median,
    the outlying runs, IQR, mean, stdev, min, max, the number of runs and a noisy flag of
    *values*, keyed ``<prefix>_median`` and so on."""
    med = statistics.median(values)
    m = mad(values)
    lo, hi, conf = median_ci(values)
    return {
        f"{prefix}_ci_low": lo,
        f"{prefix}_ci_high": hi,
        f"{prefix}_ci_level": conf,
        f"{prefix}_outliers": outliers(values),
        f"{prefix}_median": med,
        f"{prefix}_mad": m,
        f"{prefix}_iqr": iqr(values),
        f"{prefix}_mean": statistics.fmean(values),
        f"{prefix}_stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
        "runs": len(values),
        "noisy": bool(med > 0 and MAD_TO_STDEV * m > SPREAD_LIMIT * med),
    }


def t_critical(df: float) -> float:
    """The two-sided 95% critical value of Student's t with *df* degrees of freedom."""
    if df < 1:
        return math.inf
    return _T95[min(len(_T95), int(df)) - 1] if df <= len(_T95) else 1.96


def significant(a: list[float], b: list[float]) -> tuple[bool, float]:
    """Whether the means of *a* and *b* differ at 95% (Welch's t-test); returns that and t.

    With fewer than two values on a side nothing is significant. Two sides without any
    spread differ exactly when their values differ.
    """
    if len(a) < 2 or len(b) < 2:
        return False, 0.0
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return ma != mb, math.inf if ma != mb else 0.0
    t = (mb - ma) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return abs(t) > t_critical(df), t


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(c) > tiny else 1.0 + aa / tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(c) > tiny else 1.0 + aa / tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_pvalue(t: float, df: float) -> float:
    """The two-sided p-value of Student's t statistic *t* with *df* degrees of freedom."""
    if math.isinf(t):
        return 0.0
    if df <= 0:
        return 1.0
    return _betai(df / 2.0, 0.5, df / (df + t * t))


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t-test of the means of *a* and *b*: (t, two-sided p). Fewer than two
    values on a side: (0, 1). Two sides without spread: p 0 when they differ, else 1."""
    if len(a) < 2 or len(b) < 2:
        return 0.0, 1.0
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return (math.inf, 0.0) if ma != mb else (0.0, 1.0)
    t = (mb - ma) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, t_pvalue(t, df)


def benjamini_hochberg(pvalues: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given: a cell is a
    discovery at false discovery rate Q when its q-value is at most Q."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        q[i] = min(1.0, running)
    return q
