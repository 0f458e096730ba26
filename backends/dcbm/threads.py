"""Software DMA channels: each channel a CPU worker thread doing real copies.

Each channel copies its slice of descriptors in one call of compiled code that releases
the GIL (:mod:`offload.native`), which records each descriptor's completion as its copy
ends and stops between two descriptors when the job is aborted. Where that is not
available, or faults are injected (for tests) or a bandwidth is set, descriptors run in
scatter-gather transactions of ``SG_ELEMS`` descriptors, or up to ``SG_PAGES`` pages of
small ones (one vectorised copy each, as the later DCBM tree merges folios), each
descriptor's completion again recorded on its own.

Each channel's thread stays on one CPU (``pin``: channel c on the c-th usable CPU, round
robin), and a batch's channels are woken one from the other, each as it starts.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from offload import native
from offload.arrays import expand_ranges
from offload.constants import PAGE_SIZE
from offload.devmem import copy_pages, copy_runs

from .engine import DONE, FAILED, DmaEngine, Job
from .plan import Plan

#: Descriptors per scatter-gather transaction (the later DCBM tree's sg_elems)...
SG_ELEMS = 32
#: ...unless they are small: a transaction then takes up to this many pages, so that a
#: channel of scattered 4 KiB folios is not paced by one Python call per 32 pages
SG_PAGES = 512


@dataclass
class Faults:
    """Faults the thread engine injects (for tests).

    Attributes
    ----------
    fail : set of int
        Descriptor indices (in the plan) that complete with an error.
    fail_every : int
        When > 0, every n-th descriptor issued fails.
    hang : set of int
        Descriptors that never complete (until the job is aborted): a timeout.
    reorder : bool
        Complete each channel's descriptors in reverse order.
    """

    fail: set = field(default_factory=set)
    fail_every: int = 0
    hang: set = field(default_factory=set)
    reorder: bool = False
    issued: int = 0

    @property
    def injects(self) -> bool:
        """Whether any fault is set (the channels then go descriptor group by group)."""
        return bool(self.fail or self.fail_every or self.hang or self.reorder)


class _ThreadJob(Job):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.cond = threading.Condition()
        self.left = len(plan)
        self.active = 0
        self.cancelled = threading.Event()
        self.stop = np.zeros(1, dtype=np.int32)  # the compiled copy's abort flag
        self.runs: native.RunCopy | None = None
        self.issued_at = time.perf_counter()


class ThreadEngine(DmaEngine):
    """A DMA engine whose channels are CPU worker threads.

    Parameters
    ----------
    faults : Faults, optional
        Faults to inject.
    bandwidth : float, optional
        Throttle the engine to this many GB/s in all (shared evenly by the channels), so
        that its speed is known and steady (for scheduler tests); None: as fast as the
        CPU copies.
    """

    def __init__(
        self, faults: Faults | None = None, bandwidth: float | None = None, pin: bool = True
    ) -> None:
        self.faults = faults or Faults()
        self.bandwidth = bandwidth
        self.pin = pin
        self._queues: list[queue.SimpleQueue] = []
        self._threads: list[threading.Thread] = []

    def open(self, channels: int) -> None:
        cpus = _usable_cpus() if self.pin else []
        for c in range(channels):
            q: queue.SimpleQueue = queue.SimpleQueue()
            cpu = cpus[c % len(cpus)] if cpus else None
            t = threading.Thread(
                target=self._worker, args=(q, cpu), name=f"dma-chan{c}", daemon=True
            )
            t.start()
            self._queues.append(q)
            self._threads.append(t)

    def submit(self, plan: Plan, memory: Mapping[int, object], channel_ids: list[int]) -> Job:
        job = _ThreadJob(plan)
        if not (self.bandwidth or self.faults.injects):
            # checked once; each channel then copies its slice in one GIL-free call
            job.runs = native.runs(
                memory, plan.src_node, plan.src_pfn, plan.dst_node, plan.dst_pfn, plan.npages
            )
        work = []
        for c in range(plan.channels):
            idx = plan.of_channel(c)
            if idx.size:
                work.append((self._queues[channel_ids[c]], (job, idx, memory)))
        with job.cond:
            job.active += len(work)
        if work:
            # one wake from here; each channel wakes the next before it copies, so that
            # every wake-up comes from a thread about to be busy and finds a CPU idle
            # (woken all at once from here, one of them now and then waited a scheduler
            # tick behind another channel on one CPU)
            q, item = work[0]
            q.put((*item, work[1:]))
        return job

    def wait(self, job: Job, timeout: float) -> bool:
        assert isinstance(job, _ThreadJob)
        with job.cond:
            return job.cond.wait_for(lambda: job.left == 0, timeout)

    def abort(self, job: Job) -> None:
        assert isinstance(job, _ThreadJob)
        job.cancelled.set()
        job.stop[0] = 1
        with job.cond:
            job.cond.wait_for(lambda: job.active == 0)

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        self._queues.clear()
        self._threads.clear()

    # -- the channel ----------------------------------------------------------------------
    def _worker(self, q: queue.SimpleQueue, cpu: int | None) -> None:
        if cpu is not None:
            # a channel is an engine of its own: its thread stays on one CPU (channel c
            # on the c-th usable CPU, round robin), as a woken channel otherwise could
            # queue behind another one's copy on the same CPU
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {cpu})
        while True:
            item = q.get()
            if item is None:
                return
            job, idx, memory, rest = item
            if rest:
                nq, nitem = rest[0]
                nq.put((*nitem, rest[1:]))
            try:
                self._run(job, idx, memory)
            finally:
                with job.cond:
                    job.active -= 1
                    job.cond.notify_all()

    def _run(self, job: _ThreadJob, idx: np.ndarray, memory) -> None:
        span = _span(idx) if job.runs is not None else None
        if job.runs is not None and span is not None:
            # a channel's slice is contiguous: one compiled call copies it, marking each
            # descriptor done as its copy completes (an abort stops it between two)
            lo, hi = span
            self.faults.issued += idx.size
            done = job.runs.run(lo, hi, job.status[lo:hi], job.stop)
            with job.cond:
                job.left -= done
                job.cond.notify_all()
            return
        f = self.faults
        per_chan = self.bandwidth * 1e9 / max(1, len(self._threads)) if self.bandwidth else 0.0
        clock = time.perf_counter()
        if f.reorder:
            idx = idx[::-1]
        plan = job.plan
        avg = max(1, int(plan.npages[idx].sum()) // max(1, idx.size))
        step = max(SG_ELEMS, SG_PAGES // avg)
        for lo in range(0, idx.size, step):
            if job.cancelled.is_set():
                return
            sg = idx[lo : lo + step]
            bad = np.zeros(sg.size, dtype=bool)
            if f.fail or f.fail_every:
                nums = f.issued + np.arange(1, sg.size + 1)
                bad = np.isin(sg, list(f.fail))
                if f.fail_every:
                    bad |= nums % f.fail_every == 0
            f.issued += sg.size
            hang = np.isin(sg, list(f.hang)) if f.hang else np.zeros(sg.size, dtype=bool)
            good = sg[~bad & ~hang]
            if good.size:
                _copy(plan, good, memory)
                if per_chan:
                    clock += int(plan.npages[good].sum()) * PAGE_SIZE / per_chan
                    job.cancelled.wait(max(0.0, clock - time.perf_counter()))
            with job.cond:
                job.status[good] = DONE
                job.status[sg[bad]] = FAILED
                job.left -= good.size + int(bad.sum())
                job.cond.notify_all()
            if hang.any():
                job.cancelled.wait()  # never completes; only an abort ends it
                return


def _usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order ([] where that cannot be set)."""
    if not hasattr(os, "sched_getaffinity"):  # pragma: no cover - not Linux
        return []
    return sorted(os.sched_getaffinity(0))


def _span(idx: np.ndarray) -> tuple[int, int] | None:
    """``(lo, hi)`` when descriptor indices *idx* are ``lo .. hi-1`` in order, else None."""
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    return (lo, hi) if hi - lo == idx.size else None


def _copy(plan: Plan, d: np.ndarray, memory) -> None:
    """Copy descriptors *d* as one transaction: a memcpy each, or one gather/scatter."""
    fields = (plan.src_node[d], plan.src_pfn[d], plan.dst_node[d], plan.dst_pfn[d])
    npg = plan.npages[d]
    if d.size <= 4 or npg.min() >= 64:
        copy_runs(memory, *fields, npg)
        return
    sn, sp, dn, dp = fields
    copy_pages(
        memory,
        np.repeat(sn, npg),
        expand_ranges(sp, npg),
        np.repeat(dn, npg),
        expand_ranges(dp, npg),
    )
