"""Summary statistics of repeated measurements."""

from __future__ import annotations

import statistics

#: A result whose stdev exceeds this fraction of its median is flagged as noisy.
SPREAD_LIMIT = 0.10


def summarize(values: list[float], prefix: str = "gbps") -> dict:
    """Median, mean, stdev and a noisy flag of *values*, keyed ``<prefix>_median`` etc."""
    med = statistics.median(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        f"{prefix}_median": med,
        f"{prefix}_mean": mean,
        f"{prefix}_stdev": sd,
        "noisy": bool(med > 0 and sd > SPREAD_LIMIT * med),
    }
