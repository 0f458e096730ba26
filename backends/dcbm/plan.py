"""DCBM planning, pure numpy: channel slices and descriptors, independent of the engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offload.batch import FolioBatch, Runs

#: The DCBM driver's channel limit.
MAX_CHANNELS = 16


def channel_bounds(n: int, channels: int) -> np.ndarray:
    """Slice bounds of the kernel's split: C = min(channels, n, 16) channels, channel i
    taking folios ``[n*i//C, n*(i+1)//C)``. Returns the C + 1 bounds."""
    c = max(1, min(int(channels), int(n), MAX_CHANNELS))
    return (np.arange(c + 1, dtype=np.int64) * n) // c


@dataclass(frozen=True)
class Plan(Runs):
    """Descriptors of one batch: one per folio, or per coalesced run within a channel.

    Descriptor ``d`` is run ``d`` of :class:`~offload.batch.Runs`: it copies
    ``npages[d]`` pages from ``(src_node, src_pfn)`` to ``(dst_node, dst_pfn)`` and
    covers batch folios ``start[d]:stop[d]``. The descriptors cover the batch in order,
    and channel ``c`` issues descriptors ``bounds[c]:bounds[c + 1]``.
    """

    bounds: np.ndarray
    channels: int

    @property
    def channel(self) -> np.ndarray:
        """The channel of each descriptor."""
        return np.repeat(np.arange(self.channels, dtype=np.int64), np.diff(self.bounds))

    def of_channel(self, c: int) -> np.ndarray:
        """Descriptor indices of channel *c*, in issue order."""
        return np.arange(self.bounds[c], self.bounds[c + 1], dtype=np.int64)

    def folios_done(self, ok: np.ndarray, n: int) -> np.ndarray:
        """Per batch folio: whether the descriptor covering it completed (``ok``)."""
        ok = np.asarray(ok, dtype=bool)
        if ok.size == n:  # a descriptor per folio, in order
            return ok.copy()
        return np.repeat(ok, self.stop - self.start)


def plan_batch(batch: FolioBatch, channels: int, coalesce: bool = True) -> Plan:
    """Plan *batch* over *channels* DMA channels.

    With *coalesce*, folios contiguous in both source and destination (and on the same
    channel) share one descriptor.
    """
    n = len(batch)
    bounds = channel_bounds(n, channels)
    if coalesce:
        runs = batch.runs("both", breaks=bounds[1:-1])
    else:
        start = np.arange(n, dtype=np.int64)
        runs = Runs(
            batch.src_node,
            batch.src_pfn,
            batch.dst_node,
            batch.dst_pfn,
            batch.npages,
            start,
            start + 1,
        )
    if len(runs) != n:  # coalesced: each channel's slice starts a run of its own
        bounds = np.searchsorted(runs.start, bounds)
    return Plan(**vars(runs), bounds=bounds, channels=bounds.size - 1)
