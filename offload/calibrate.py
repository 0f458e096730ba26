"""A short calibration of a copy provider, to seed its cost model before real batches.

The provider copies scratch batches alone, on buffers of its own (never the machine's
memory): a warm-up (a first call pays for threads and pools that start cold), then
4 KiB folios at two counts and 2 MiB folios, each shape timed two or three times (the
least time kept), so that a fixed cost per call, a cost per folio and a bandwidth can
be told apart (:func:`~offload.costmodel.fit_calls`). The scratch is as large as a
batch (up to 32 MiB a side), so that the bytes come from memory rather than from a
cache as far as the batch size allows; only the folio sizes the provider takes are
used. Its batches say so (:func:`is_scratch`). A provider that fails, declines, leaves
a folio unmarked or runs past the deadline gives no seed: the scheduler then probes it
on real batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .batch import FolioBatch, handed_marks
from .constants import HPAGE_PMD_ORDER, PAGE_SIZE
from .costmodel import CallCost, fit_calls

#: Calls per shape at most, and how close (a ratio) two must agree to stop at two.
TRIES = 3
AGREE = 1.1
#: Scratch pages per side: the batch size, within these bounds.
MIN_PAGES = 1024
MAX_PAGES = 8192


class ScratchMemory(dict):
    """The ``memory`` of a calibration batch: buffers of its own, not a machine's."""


def is_scratch(batch: FolioBatch) -> bool:
    """Whether *batch* is a calibration batch (a backend that counts what it copies, or
    a test that records it, may leave those out)."""
    return isinstance(batch.memory, ScratchMemory)


class Scratch:
    """Two scratch nodes (0: sources, filled; 1: destinations) of *pages* base pages."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        rng = np.random.default_rng(7)
        dst = np.empty((pages, PAGE_SIZE), dtype=np.uint8)
        dst.fill(0)  # touched now: the calibration must not time the host's page faults
        self.memory = ScratchMemory(
            {0: rng.integers(1, 256, (pages, PAGE_SIZE), dtype=np.uint8), 1: dst}
        )
        self._rng = rng

    def batch(self, folios: int, order: int) -> FolioBatch:
        """*folios* folios of *order*, node 0 to node 1, scattered over the scratch as
        the frames of a machine that has run a while are (no run to coalesce)."""
        slots = self.pages >> order
        src = self._rng.permutation(slots)[:folios].astype(np.int64) << order
        dst = self._rng.permutation(slots)[:folios].astype(np.int64) << order
        return FolioBatch(
            np.zeros(folios, np.int32),
            src,
            np.ones(folios, np.int32),
            dst,
            np.full(folios, order, np.int8),
            memory=self.memory,
        )


def scratch_pages(batch_pages: int) -> int:
    """Scratch pages for a machine whose batches hold *batch_pages* pages."""
    return int(min(MAX_PAGES, max(MIN_PAGES, batch_pages)))


def calibrate(
    run: Callable[[FolioBatch], float | None],
    scratch: Scratch,
    fits: Callable[[int], bool] = lambda nbytes: True,
) -> CallCost | None:
    """Seed a cost model: *run* copies a scratch batch alone and returns its seconds
    (None where it failed, declined, left a folio unmarked or ran late). Only folio
    sizes the provider takes (*fits*) are used: 4 KiB ones at two counts and 2 MiB ones;
    None where it takes neither."""
    n = scratch.pages
    small, huge = fits(PAGE_SIZE), fits(PAGE_SIZE << HPAGE_PMD_ORDER)
    shapes = [(n // 2, 0), (n, 0)] if small else []
    if huge:
        shapes += [(n >> HPAGE_PMD_ORDER, HPAGE_PMD_ORDER)]
        if not small:
            shapes.insert(0, (n >> (HPAGE_PMD_ORDER + 1), HPAGE_PMD_ORDER))
    if not shapes:
        return None
    warm, order = (64, 0) if small else (1, HPAGE_PMD_ORDER)
    if run(scratch.batch(warm, order)) is None:  # the warm-up
        return None
    calls = []
    for folios, order in shapes:
        seconds = _least(run, scratch, folios, order)
        if seconds is None:
            return None
        calls.append((folios, folios * PAGE_SIZE << order, seconds))
    f, b, t = (np.array(x, dtype=float) for x in zip(*calls))
    return fit_calls(f, b, t)


def _least(
    run: Callable[[FolioBatch], float | None], scratch: Scratch, folios: int, order: int
) -> float | None:
    """The least time of a shape's calls (None at the first failure): two calls, and a
    third where they differ by more than :data:`AGREE`. A call the host delayed
    (descheduled, a page fault elsewhere) only ever takes longer, and one such call in
    a fit of three would shift the fixed cost by as much as the delay."""
    times: list[float] = []
    for _ in range(TRIES):
        seconds = run(scratch.batch(folios, order))
        if seconds is None:
            return None
        times.append(seconds)
        if len(times) == 2 and max(times) <= min(times) * AGREE:
            break
    return min(times)


def timed(copy: Callable[[FolioBatch], bool]) -> Callable[[FolioBatch], float | None]:
    """*copy* (True where the call returned in time with every folio marked), timed."""

    def run(batch: FolioBatch) -> float | None:
        # the marks are read from the array handed over: a plugin may rebind the
        # batch's attribute to anything (a list, None), which marks nothing
        held, n = batch.copied, len(batch)
        t0 = time.perf_counter()
        ok = copy(batch)
        seconds = time.perf_counter() - t0
        marked = bool(handed_marks(held, n).all())
        return seconds if ok and marked and seconds > 0 else None

    return run


__all__ = ["Scratch", "ScratchMemory", "calibrate", "is_scratch", "scratch_pages", "timed"]
