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


def summarize(values: list[float], prefix: str = "gbps") -> dict:
    """Median, MAD, IQR, mean, stdev, min, max, the number of runs and a noisy flag of
    *values*, keyed ``<prefix>_median`` and so on."""
    med = statistics.median(values)
    m = mad(values)
    return {
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
