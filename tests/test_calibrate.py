"""The calibration that seeds a provider's cost model: what it runs, what it fits, and
when it gives no seed."""

from __future__ import annotations

import numpy as np
import pytest

from offload import PAGE_SIZE
from offload.calibrate import Scratch, calibrate, is_scratch, scratch_pages, timed


def _model(fixed: float, per_folio: float, gbps: float, seen: list):
    def run(batch):
        seen.append((len(batch), int(batch.order[0])))
        assert is_scratch(batch)
        return fixed + per_folio * len(batch) + batch.nbytes / (gbps * 1e9)

    return run


def test_it_tells_the_fixed_the_per_folio_and_the_per_byte_cost_apart():
    seen: list = []
    cost = calibrate(_model(20e-6, 0.3e-6, 8.0, seen), Scratch(1024))
    assert cost is not None
    assert cost.fixed_s == pytest.approx(20e-6, rel=1e-6)
    assert cost.per_folio_s == pytest.approx(0.3e-6, rel=1e-6)
    assert cost.gbps == pytest.approx(8.0, rel=1e-6)
    # a warm-up, 4 KiB folios at two counts, 2 MiB folios; each shape twice (they agree)
    assert seen == [(64, 0), (512, 0), (512, 0), (1024, 0), (1024, 0), (2, 9), (2, 9)]


def test_a_call_the_host_delayed_is_not_believed():
    """One call per shape delayed (as a descheduled thread is): the least of a shape's
    calls is kept, so the fit is that of the undisturbed calls."""
    seen: list = []
    exact = _model(20e-6, 0.3e-6, 8.0, seen)
    delayed = {1, 5}  # the first call of the 512 shape, the second of the 1024 one

    def run(batch):
        t = exact(batch)
        return t + 5e-3 if len(seen) - 1 in delayed else t

    cost = calibrate(run, Scratch(1024))
    assert cost is not None
    assert cost.fixed_s == pytest.approx(20e-6, rel=1e-6)
    assert cost.gbps == pytest.approx(8.0, rel=1e-6)
    # a shape whose two calls disagree gets a third; the 2M shape agreed at two
    assert [s for s in seen[1:]] == [(512, 0)] * 3 + [(1024, 0)] * 3 + [(2, 9)] * 2


def test_only_the_folio_sizes_a_provider_takes_are_used():
    seen: list = []
    calibrate(_model(0.0, 0.0, 4.0, seen), Scratch(2048), fits=lambda b: b >= 1 << 21)
    assert {order for _, order in seen} == {9}
    seen.clear()
    calibrate(_model(0.0, 0.0, 4.0, seen), Scratch(2048), fits=lambda b: b <= 1 << 16)
    assert {order for _, order in seen} == {0}
    assert calibrate(_model(0, 0, 1, []), Scratch(1024), fits=lambda b: b == 1 << 16) is None


def test_a_call_that_fails_gives_no_seed():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        return None if len(calls) == 3 else 1e-3

    assert calibrate(flaky, Scratch(1024)) is None
    assert len(calls) == 3  # it stops at the first failure (the second call of a shape)


def test_the_scratch_is_scattered_and_each_copy_is_checked():
    s = Scratch(1024)
    b = s.batch(512, 0)
    assert np.unique(b.src_pfn).size == 512 and (np.diff(b.src_pfn) != 1).any()
    assert int(b.dst_pfn.max()) < 1024 and int(b.src_pfn.max()) < 1024
    marks_all = timed(lambda batch: batch.copied.__setitem__(slice(None), True) or True)
    marks_half = timed(lambda batch: batch.copied.__setitem__(slice(0, 1), True) or True)
    assert marks_all(s.batch(8, 0)) is not None
    assert marks_half(s.batch(8, 0)) is None  # a folio left unmarked: no time
    # marks made anywhere but in the array handed over count for nothing
    for junk in ([True] * 8, True, None, np.ones(8, dtype=bool)):
        rebinds = timed(lambda batch, j=junk: setattr(batch, "copied", j) or True)
        assert rebinds(s.batch(8, 0)) is None
    assert scratch_pages(64) == 1024 and scratch_pages(1 << 20) == 8192
    assert s.memory[0].nbytes == 1024 * PAGE_SIZE
