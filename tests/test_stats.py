"""The bench's statistics: the confidence interval of the median, outliers flagged, the
p-values and the false discovery rate of compare."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offload.bench.stats import (
    benjamini_hochberg,
    median_ci,
    outliers,
    summarize,
    t_pvalue,
    welch,
)


@pytest.mark.parametrize(
    "n, k, level",
    [(5, 1, 0.9375), (10, 2, 0.9785), (20, 6, 0.9586)],  # the textbook order statistics
)
def test_the_median_interval_comes_from_order_statistics(n, k, level):
    lo, hi, conf = median_ci(list(range(1, n + 1)))
    assert (lo, hi) == (k, n - k + 1) and conf == pytest.approx(level, abs=1e-4)


def test_the_median_interval_covers_the_median_as_often_as_it_says():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(2000):
        lo, hi, _ = median_ci(list(rng.exponential(1.0, 10)))
        hits += lo <= math.log(2) <= hi  # the exponential's median
    assert 0.96 <= hits / 2000 <= 0.995  # 97.85% claimed


def test_outliers_are_flagged_not_dropped():
    runs = [5.0, 5.1, 4.9, 5.05, 3.4]  # the 31% outlier MAD hid with 3 runs
    s = summarize(runs)
    assert s["gbps_outliers"] == [4] and s["runs"] == 5
    assert s["gbps_ci_low"] == 3.4 and s["gbps_ci_high"] == 5.1
    assert outliers([5.0] * 5) == []


def test_p_values_and_the_false_discovery_rate():
    assert t_pvalue(2.228, 10) == pytest.approx(0.05, abs=1e-3)
    assert t_pvalue(0.0, 4) == pytest.approx(1.0)
    t, p = welch([5.0, 5.1, 4.9, 5.0], [4.0, 4.1, 3.9, 4.0])
    assert t < 0 and p < 1e-4
    assert welch([1.0], [2.0, 3.0]) == (0.0, 1.0)
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx(
        [0.04, 0.16 / 3, 0.16 / 3, 0.5]
    )
    rng = np.random.default_rng(9)  # 36 null cells: a few p < 0.05, no q at 0.05
    ps = [welch(list(rng.normal(5, 0.2, 5)), list(rng.normal(5, 0.2, 5)))[1] for _ in range(36)]
    assert min(benjamini_hochberg(ps)) > 0.05
