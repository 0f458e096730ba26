"""``cpu-serial``: the vanilla kernel's copy, folio after folio on one CPU."""

from __future__ import annotations

from offload.batch import FolioBatch
from offload.migrator import Migrator


class CpuSerial(Migrator):
    """Copy each folio with its own copy call, in order, on the calling thread.

    This is the baseline the benchmarks compare against (``folio_copy()`` per folio in
    the unpatched kernel), so it loops in Python on purpose.
    """

    name = "cpu-serial"

    def offload_copy(self, batch: FolioBatch) -> None:
        mem = batch.memory
        copied = batch.copied
        rows = zip(batch.src_node.tolist(), batch.src_pfn.tolist(), batch.dst_node.tolist(),
                   batch.dst_pfn.tolist(), batch.order.tolist())
        for i, (sn, sp, dn, dp, order) in enumerate(rows):
            n = 1 << order
            mem[dn][dp:dp + n] = mem[sn][sp:sp + n]
            copied[i] = True
