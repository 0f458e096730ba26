"""``offload bench scale``: costs against the number of folios and of mappings."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from offload import PAGE_SIZE, Machine
from offload.errors import OffloadError
from offload.hostinfo import peak_rss


def node_metadata_bytes(m: Machine) -> float:
    """Bytes of page metadata per 4 KiB page of node memory: every per-frame array of
    the nodes (memmap, buddy bitmaps and orders, the aged layout's permutations) plus
    every per-page array of the mapped objects (node, pfn, mapcount, ptes), divided by
    the nodes' pages. Counted from the arrays' ``nbytes``, frames excluded."""
    pages = sum(n.nr_pages for n in m.nodes)
    return m.metadata_bytes / max(1, pages)


def folio_scaling(
    counts: list[int],
    backend: str,
    layout: str,
    repeat: int,
    on_done: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Per count N: one move_pages of N 4 KiB folios between two nodes (first and later
    runs), its cost per folio, the metadata per page and the process's peak memory.
    ``on_done(row)`` follows every count."""
    rows: list[dict[str, Any]] = []
    kw: dict[str, Any] = (
        {} if backend == "cpu-serial" else {"offload": backend, "policy": "offload-only"}
    )
    _warm_process(layout, kw)
    for n in counts:
        pages = n + 2048  # a little room beside the region
        nodes = f"{pages * PAGE_SIZE},{pages * PAGE_SIZE}"
        m = Machine(nodes=nodes, layout=layout, prefault=True, batch_pages=65536, **kw)
        try:
            p = m.spawn(uid=0)
            a = p.mmap(n * PAGE_SIZE)
            chunk = np.full(min(n, 16384) * PAGE_SIZE, 0x5A, dtype=np.uint8)
            for off in range(0, n * PAGE_SIZE, chunk.size):  # no region-sized temporary
                p.write(a + off, chunk[: n * PAGE_SIZE - off])
            addrs = a + np.arange(n, dtype=np.int64) * PAGE_SIZE
            times = []
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                res = p.move_pages(addrs, np.full(n, (i + 1) % 2, dtype=np.int64))
                times.append(time.perf_counter() - t0)
                if res.ret:
                    raise OffloadError(f"{res.ret} of {n} folios did not move")
            later = float(np.median(times[1:]))
            rows.append(
                {
                    "suite": "scale",
                    "backend": backend,
                    "layout": layout,
                    "folios": n,
                    "first_s": times[0],
                    "later_s": later,
                    "first_over_later": times[0] / later,
                    "us_per_folio": later / n * 1e6,
                    "gbps": n * PAGE_SIZE / later / 1e9,
                    "metadata_bytes_per_page": node_metadata_bytes(m),
                    "peak_rss_bytes": peak_rss(),
                }
            )
            if on_done:
                on_done(rows[-1])
        finally:
            m.close()
            del m
            gc.collect()
        loop_us = _page_loop_us(n, repeat) if rows and rows[-1]["folios"] == n else None
        if loop_us is not None:
            # the hardware's own growth: a compiled loop over as many scattered pages
            rows[-1]["page_loop_us_per_page"] = loop_us
    base = rows[0] if rows else {}
    for r in rows:
        r["cost_vs_smallest"] = r["us_per_folio"] / base["us_per_folio"]
        if "page_loop_us_per_page" in base:
            loop = r["page_loop_us_per_page"] / base["page_loop_us_per_page"]
            r["page_loop_vs_smallest"] = loop
            r["cost_vs_smallest_over_page_loop"] = r["cost_vs_smallest"] / loop
    return rows


def _page_loop_us(n: int, repeat: int) -> float | None:
    """Microseconds per page of a compiled loop copying *n* random pages between two
    buffers of *n* pages (the median of *repeat* passes after a warm one); None where
    nothing is compiled."""
    from offload import native

    from .roofline import PageLoop

    if not native.available():
        return None
    loop = PageLoop(n * PAGE_SIZE, spread=1)
    try:
        gbps = float(np.median([loop.run() for _ in range(repeat)]))
    finally:
        del loop
        gc.collect()
    return PAGE_SIZE / gbps / 1e3


def _warm_process(layout: str, kw: dict[str, Any]) -> None:
    """Pay this process's one-time costs before anything is timed: the compiled page
    copy is built (or loaded) on first use, and modules load on first call. The first
    move of each count is then what the bench means by it, the first touch of the
    machine's node memory, not the interpreter's start-up."""
    with Machine(nodes="2M,2M", layout=layout, prefault=True, **kw) as m:
        p = m.spawn(uid=0)
        a = p.mmap(64 * PAGE_SIZE)
        p.write(a, bytes(64 * PAGE_SIZE))
        addrs = a + np.arange(64, dtype=np.int64) * PAGE_SIZE
        for node in (1, 0):
            p.move_pages(addrs, np.full(64, node, dtype=np.int64))


def mapping_scaling(
    counts: list[int], probes: int = 200, on_done: Callable[[dict], None] | None = None
) -> list[dict]:
    """Per count N: the cost of one 4 KiB mmap, write and munmap in a process that
    already has N mappings (averaged over *probes*). ``on_done(row)`` follows every
    count."""
    rows: list[dict[str, Any]] = []
    with Machine(nodes=f"{(max(counts) + probes + 64) * PAGE_SIZE}") as m:
        p = m.spawn()
        have = 0
        for n in counts:
            while have < n:
                p.mmap(PAGE_SIZE, populate=False)
                have += 1
            t0 = time.perf_counter()
            addrs = [p.mmap(PAGE_SIZE, populate=False) for _ in range(probes)]
            t1 = time.perf_counter()
            for x in addrs:
                p.write(x, b"x")
            t2 = time.perf_counter()
            for x in addrs:
                p.munmap(x, PAGE_SIZE)
            t3 = time.perf_counter()
            rows.append(
                {
                    "suite": "mappings",
                    "mappings": n,
                    "mmap_us": (t1 - t0) / probes * 1e6,
                    "write_fault_us": (t2 - t1) / probes * 1e6,
                    "munmap_us": (t3 - t2) / probes * 1e6,
                }
            )
            if on_done:
                on_done(rows[-1])
    return rows


__all__ = ["folio_scaling", "mapping_scaling", "node_metadata_bytes"]
