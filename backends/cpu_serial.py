"""``cpu-serial``: the vanilla kernel's copy, folio after folio on one CPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offload.batch import FolioBatch
from offload.constants import PAGE_SHIFT
from offload.migrator import Migrator, shipped


@shipped(plain_copy=True)
class CpuSerial(Migrator):
    """Copy each folio with its own copy call, in order, on the calling thread.

    This is the baseline the benchmarks compare against (``folio_copy()`` per folio in
    the unpatched kernel), so it loops in Python on purpose; each copy is one memcpy
    through a memoryview, the cheapest per-folio copy Python has.
    """

    name = "cpu-serial"

    def _views(self, memory: Mapping[int, Any]) -> dict[int, memoryview]:
        """A flat memoryview of every node of *memory*, kept while the batches come from
        the same machine (its memory mapping is one object for the machine's life)."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is memory:
            return cached[1]
        views = {nid: memoryview(frames.reshape(-1)) for nid, frames in memory.items()}
        self._cache = (memory, views)
        return views

    def offload_copy(self, batch: FolioBatch) -> None:
        views = self._views(batch.memory)
        copied = batch.copied
        rows = zip(
            batch.src_node.tolist(),
            (batch.src_pfn << PAGE_SHIFT).tolist(),
            batch.dst_node.tolist(),
            (batch.dst_pfn << PAGE_SHIFT).tolist(),
            (batch.npages << PAGE_SHIFT).tolist(),
        )
        for i, (sn, s, dn, d, n) in enumerate(rows):
            views[dn][d : d + n] = views[sn][s : s + n]
            copied[i] = True
