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
    covers batch folios ``start[d]:stop[d]``; it is issued on channel ``channel[d]``.
    """

    channel: np.ndarray
    channels: int

    def of_channel(self, c: int) -> np.ndarray:
        """Descriptor indices of channel *c*, in issue order."""
        return np.flatnonzero(self.channel == c)

    def folios_done(self, ok: np.ndarray, n: int) -> np.ndarray:
        """Per batch folio: whether the descriptor covering it completed (``ok``)."""
        marks = np.zeros(n + 1, dtype=np.int64)
        np.add.at(marks, self.start[ok], 1)
        np.add.at(marks, self.stop[ok], -1)
        return np.cumsum(marks[:-1]) > 0


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
    if len(runs) == n:  # a descriptor per folio: channel c holds its slice, in order
        channel = np.repeat(np.arange(bounds.size - 1, dtype=np.int64), np.diff(bounds))
    else:
        channel = np.searchsorted(bounds, runs.start, side="right") - 1
    return Plan(**vars(runs), channel=channel, channels=bounds.size - 1)
