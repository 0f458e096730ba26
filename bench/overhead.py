"""The engine's own cost: a move_pages call with the copy step removed.

The copy step of a machine built as the move_pages suite builds it is replaced by one
that marks every folio copied and copies nothing (an attribute on that machine's backend
instance; nothing else changes), so that what remains is the engine: the page-table
walk, isolation, unmap (destination allocation, migration entries), the batch hand-off,
the move (reference checks, remap, freeing the sources) and the syscall's bookkeeping.
Measured so, not as wall time minus copy time, it is free of the copy's cache and
memory-bandwidth effects on everything around it. Bytes are not checked (nothing is
copied); the suite reports time only.
"""

from __future__ import annotations

import time

import numpy as np

from offload import PAGE_SIZE, FolioBatch

from .movepages import Case, machine_for

#: The paths measured: the vanilla kernel's CPU copy path, and a registered migrator
#: that copies every batch (the scheduler's offload path, as the bench's other rows).
PATHS = {"cpu path": "cpu-serial", "offload path": "dma-threads:channels=1"}
PHASES = ("unmap_s", "copy_s", "move_s")


def _mark_only(batch: FolioBatch) -> None:
    batch.copied[:] = True


def measure(path: str, case: Case) -> dict:
    """One row: the median cost per folio of *case*'s move_pages call on *path* (a key of
    :data:`PATHS`) with the copy step removed, and of each engine phase."""
    m = machine_for(PATHS[path], case.total, case.batch_pages, layout=case.layout)
    try:
        mig = m.offload.active if PATHS[path] != "cpu-serial" else m.cpu
        assert mig is not None  # machine_for registers the backend of the offload path
        mig.offload_copy = _mark_only  # type: ignore[method-assign]
        p = m.spawn(uid=0)
        addr = p.mmap(case.total, node=0, folio_size=case.folio_size)
        addrs = np.arange(addr, addr + case.total, case.folio_size, dtype=np.int64)
        folios = addrs.size
        runs: dict[str, list[float]] = {k: [] for k in ("total", *PHASES, "other")}
        where = 0
        for i in range(case.warmup + case.repeat):
            where = 1 - where
            before = {k: m.stats["engine"][k] for k in PHASES}
            t0 = time.perf_counter()
            r = p.move_pages(addrs, np.full(folios, where, dtype=np.int64))
            dt = time.perf_counter() - t0
            if r.ret != 0:
                raise RuntimeError(f"{r.ret} folios were not migrated")
            if i < case.warmup:
                continue
            phases = {k: m.stats["engine"][k] - before[k] for k in PHASES}
            runs["total"].append(dt)
            for k, v in phases.items():
                runs[k].append(v)
            runs["other"].append(dt - sum(phases.values()))
        us = {k: float(np.median(v)) / folios * 1e6 for k, v in runs.items()}
        return {
            "suite": "overhead",
            "path": path,
            "backend": PATHS[path],
            "folio_size": case.folio_size,
            "total_bytes": case.total,
            "folios": folios,
            "repeat": case.repeat,
            "layout": case.layout,
            "batch_pages": case.batch_pages,
            "us_per_folio": us["total"],
            "us_per_page": us["total"] / (case.folio_size // PAGE_SIZE),
            "unmap_us_per_folio": us["unmap_s"],
            "handoff_us_per_folio": us["copy_s"],
            "move_us_per_folio": us["move_s"],
            "other_us_per_folio": us["other"],
            "runs_s": runs["total"],
        }
    finally:
        m.close()


__all__ = ["PATHS", "measure"]
