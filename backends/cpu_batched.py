"""``cpu-batched``: the whole batch in a few vectorised copies, split over threads.

The batch is flattened into its base pages (source and destination pfn of each), cut
into one contiguous share of pages per thread (many folios are thereby dealt out whole;
a few large ones are chunked across threads, as mtcopy does), and each share is copied
with the fewest numpy calls its layout allows:

- runs contiguous in source and destination: one slice copy each (a memcpy);
- otherwise runs contiguous in the destination: one ``np.take(..., out=, mode="clip")``
  each, a single pass that gathers rows straight into the destination;
- otherwise (both sides scattered): one gather/scatter per pair of nodes.

numpy releases the GIL in these copies, so the threads run in parallel.

Where the compiled copy is available (:mod:`offload.native`) and the batch has many
folios, each thread instead makes one compiled call of per-folio ``memcpy``, which
releases the GIL, taking whole folios a few at a time from a counter the threads share,
so that they finish together: what a C loop of as many threads does.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from offload import native
from offload.arrays import run_boundaries
from offload.batch import FolioBatch
from offload.devmem import copy_pages, copy_runs
from offload.migrator import Migrator, Option, shipped

#: A share is copied run by run when it has at most this many runs per 1024 pages.
_RUNS_PER_1K_PAGES = 64
#: Each thread's share is at least this many pages (2 MiB), else the batch is copied on
#: fewer threads: handing a share to a worker and waiting for it cost more than it
#: saved below that (measured on the development VM, 4 KiB pages
#: scattered: a batch of 512 pages moved at 6.7-7.1 GB/s on one thread against
#: 6.1-6.3 on two, 1024 pages within 5% either way, 1536 7-10% faster on two).
_MIN_PAGES_PER_THREAD = 512


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@shipped(plain_copy=True)
class CpuBatched(Migrator):
    """Vectorised, multi-threaded CPU batch copy.

    Parameters
    ----------
    threads : int, optional
        Worker threads (default: the usable CPUs).
    """

    name = "cpu-batched"
    options = {"threads": Option(int, min=1, max=256, help="copy threads (default: usable CPUs)")}

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self.threads = int(threads) if threads is not None else usable_cpus()
        self._pool: ThreadPoolExecutor | None = None

    def offload_copy(self, batch: FolioBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        folio_pages = batch.npages
        npages = int(folio_pages.sum())
        shares = max(1, min(self.threads, npages // _MIN_PAGES_PER_THREAD))
        rc = None
        if n >= 8 * shares:
            fields = (batch.src_node, batch.src_pfn, batch.dst_node, batch.dst_pfn, folio_pages)
            rc = native.runs(batch.memory, *fields)
        if rc is not None:
            # many folios: each thread in one compiled call that releases the GIL (a
            # memcpy per folio, as fast as one per coalesced run: no need to coalesce
            # first), taking whole folios from a shared counter a few at a time, so that
            # a thread that copies slower (its memory, its CPU) takes fewer and all end
            # together; about 256 takes a thread
            taken = np.zeros(1, dtype=np.int64)
            grab = max(1, n // (shares * 256))
            self._run([taken] * shares, lambda t: rc.run_shared(t, grab))
            batch.copied[:] = True
            return
        runs = batch.runs("both")
        if len(runs) * shares <= 8 * self.threads:
            # few long runs: cut them into equal page ranges, no page arrays needed
            jobs = _cut_runs(runs, shares)
            self._run(jobs, lambda job: copy_runs(batch.memory, *job))
        else:
            snode, spfn, dnode, dpfn = batch.pages()
            bounds = np.linspace(0, npages, shares + 1).astype(np.int64)
            jobs = [
                (snode[a:b], spfn[a:b], dnode[a:b], dpfn[a:b])
                for a, b in itertools.pairwise(bounds)
                if b > a
            ]
            self._run(jobs, lambda job: _copy_pages(batch.memory, *job))
        batch.copied[:] = True

    def _run(self, jobs: list, fn) -> None:
        if len(jobs) == 1:
            fn(jobs[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cpu-batched")
        futures = [self._pool.submit(fn, job) for job in jobs[1:]]
        fn(jobs[0])
        for f in futures:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close()


def _cut_runs(runs, shares: int) -> list[tuple]:
    """Split coalesced runs into *shares* lists of runs of (nearly) equal page counts."""
    ends = np.cumsum(runs.npages)
    total = int(ends[-1])
    bounds = np.linspace(0, total, shares + 1).astype(np.int64)
    cuts = np.unique(np.concatenate((ends - runs.npages, ends, bounds)))
    cuts = cuts[cuts <= total]
    lo, hi = cuts[:-1], cuts[1:]
    r = np.searchsorted(ends, lo, side="right")  # run holding each piece
    off = lo - (ends[r] - runs.npages[r])
    pieces = (
        runs.src_node[r],
        runs.src_pfn[r] + off,
        runs.dst_node[r],
        runs.dst_pfn[r] + off,
        hi - lo,
    )
    share = np.searchsorted(bounds[1:], lo, side="right")
    jobs = []
    for s in range(shares):
        sel = share == s
        if sel.any():
            jobs.append(tuple(a[sel] for a in pieces))
    return jobs


def _copy_pages(memory, snode, spfn, dnode, dpfn) -> None:
    """Copy pages given one by one, with as few numpy calls as their layout allows."""
    n = spfn.size
    if n == 0:
        return
    same_s = snode[1:] == snode[:-1]
    same_d = dnode[1:] == dnode[:-1]
    dcont = dpfn[1:] == dpfn[:-1] + 1
    both = run_boundaries(same_s, same_d, dcont, spfn[1:] == spfn[:-1] + 1)
    if both.size * 1024 <= _RUNS_PER_1K_PAGES * n:
        stop = np.append(both[1:], n)
        copy_runs(memory, snode[both], spfn[both], dnode[both], dpfn[both], stop - both)
        return
    dst_runs = run_boundaries(same_s, same_d, dcont)
    if dst_runs.size * 1024 <= _RUNS_PER_1K_PAGES * n:
        stop = np.append(dst_runs[1:], n)
        for a, b in zip(dst_runs.tolist(), stop.tolist()):
            d0 = int(dpfn[a])
            np.take(
                memory[int(snode[a])],
                spfn[a:b],
                axis=0,
                out=memory[int(dnode[a])][d0 : d0 + b - a],
                mode="clip",
            )
        return
    copy_pages(memory, snode, spfn, dnode, dpfn)  # scattered on both sides: gather/scatter
