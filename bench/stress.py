"""``offload bench stress``: random migrations under accessors and injected faults."""

from __future__ import annotations

import errno
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from offload import MPOL_MF_MOVE_ALL, PAGE_SIZE, Machine, Migrator
from offload.counters import counters

ALLOWED_STATUS = {-errno.EBUSY, -errno.ENOMEM, -errno.EACCES}


class Hostile(Migrator):
    """Wraps the DMA backend and misbehaves now and then, as a buggy plugin would.

    Per batch, at random: marks everything and raises; raises ``SystemExit`` or
    ``KeyboardInterrupt``; answers only after the machine's deadline and then scribbles
    over its destinations; with *stray*, writes one page past a destination (verify
    mode must catch and undo it). Otherwise the wrapped backend copies.
    """

    name = "hostile"

    def __init__(self, inner: Migrator, seed: int, late_s: float, stray: bool) -> None:
        self.inner = inner
        self.late_s = late_s
        self.stray = stray
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.pending = 0

    def offload_copy(self, batch) -> None:
        with self.lock:
            x = float(self.rng.random())
        if x < 0.03:
            self.counts["mark-then-raise calls"] += 1
            batch.copied[:] = True
            raise OSError(errno.EIO, "injected DMA error after marking")
        if x < 0.04:
            self.counts["SystemExit/KeyboardInterrupt raised"] += 1
            raise (SystemExit(1) if x < 0.035 else KeyboardInterrupt())
        if x < 0.05:
            self.counts["late calls (past the deadline, then scribbling)"] += 1
            with self.lock:
                self.pending += 1
            try:
                time.sleep(self.late_s)
                for i in range(len(batch)):
                    mem = batch.memory[int(batch.dst_node[i])]
                    mem[batch.dst_pfn[i] : batch.dst_pfn[i] + (1 << int(batch.order[i]))] = 0xEE
                batch.copied[:] = True
            finally:
                with self.lock:
                    self.pending -= 1
            return
        self.inner.offload_copy(batch)
        if self.stray and x < 0.07 and len(batch):
            mem = batch.memory[int(batch.dst_node[0])]
            end = int(batch.dst_pfn[0]) + (1 << int(batch.order[0]))
            if end < mem.shape[0]:
                self.counts["stray writes"] += 1
                mem[end, :8] ^= 0xFF

    def can_access(self, node) -> bool:
        return self.inner.can_access(node)


@dataclass
class Region:
    proc: object
    addr: int
    length: int
    model: np.ndarray  #: the byte value every page should hold

    @property
    def npages(self) -> int:
        return self.length // PAGE_SIZE


def run_stress(
    seconds: float, seed: int = 0, policy: str = "adaptive", verify: bool = False, progress=None
) -> dict:
    """Run the stress for *seconds*; return its report (``report["ok"]`` is the verdict)."""
    from backends.dcbm import DmaThreads, Faults

    faults = Faults(fail_every=13, reorder=True)
    off = DmaThreads(channels=4, timeout=0.05, faults=faults)
    ops: Counter = Counter()
    injected: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    hostile = Hostile(off, seed + 60, late_s=0.25, stray=verify)
    m = Machine(
        nodes="40M,40M,40M",
        cpu="cpu-batched:threads=2",
        offload=hostile,
        policy=policy,
        batch_pages=256,
        verify=verify,
        offload_timeout=0.1,
    )
    try:
        user = m.spawn(uid=1000)
        root = m.spawn(uid=0)
        regions = []
        for length, fs, shared in (
            (2 << 20, PAGE_SIZE, False),
            (4 << 20, 16 * PAGE_SIZE, False),
            (4 << 20, 1 << 21, False),
            (1 << 20, PAGE_SIZE, True),
        ):
            a = user.mmap(length, node=0, folio_size=fs, shared=shared)
            regions.append(Region(user, a, length, np.zeros(length // PAGE_SIZE, np.uint8)))
        shared_r = regions[-1]
        shared_in_root = user.share(shared_r.addr, shared_r.length, into=root)
        root.read(shared_in_root, shared_r.length)  # root's page table entries: mapped twice

        def guard(fn):
            def run(*args):
                try:
                    fn(*args)
                except Exception as exc:  # every failure is a finding
                    with lock:
                        errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
                    stop.set()

            return run

        @guard
        def writer(w: int, nw: int) -> None:
            rng = np.random.default_rng(seed + 10 + w)
            while not stop.is_set():
                r = regions[int(rng.integers(len(regions)))]
                page = int(rng.integers(r.npages // nw)) * nw + w  # pages w, w+nw, ...
                v = int(rng.integers(1, 256))
                r.proc.write(r.addr + page * PAGE_SIZE, bytes([v]) * PAGE_SIZE)
                r.model[page] = v
                ops["write"] += 1

        @guard
        def reader() -> None:
            rng = np.random.default_rng(seed + 20)
            while not stop.is_set():
                r = regions[int(rng.integers(len(regions)))]
                page = int(rng.integers(r.npages))
                got = r.proc.read_array(r.addr + page * PAGE_SIZE, PAGE_SIZE)
                if (got != got[0]).any():
                    raise AssertionError(f"torn read of page {page} at {r.addr:#x}")
                ops["read"] += 1

        @guard
        def mover(k: int) -> None:
            rng = np.random.default_rng(seed + 30 + k)
            while not stop.is_set():
                choice = rng.random()
                r = regions[int(rng.integers(len(regions)))]
                if choice < 0.6:
                    n = int(rng.integers(1, r.npages + 1))
                    idx = np.sort(rng.choice(r.npages, n, replace=False))
                    target = int(rng.integers(3))
                    res = r.proc.move_pages(r.addr + idx * PAGE_SIZE, [target] * n)
                    bad = set(res.status) - {target} - ALLOWED_STATUS
                    if bad:
                        raise AssertionError(f"move_pages gave statuses {sorted(bad)}")
                    ops["move_pages"] += 1
                elif choice < 0.8:
                    target = int(rng.integers(3))
                    n = shared_r.npages
                    res = root.move_pages(
                        shared_in_root + np.arange(n) * PAGE_SIZE,
                        [target] * n,
                        flags=MPOL_MF_MOVE_ALL,
                    )
                    if set(res.status) - {target, -errno.EBUSY, -errno.ENOMEM}:
                        raise AssertionError(f"MOVE_ALL gave statuses {sorted(set(res.status))}")
                    ops["move_pages_all"] += 1
                else:
                    old = sorted(
                        set(rng.choice(3, int(rng.integers(1, 3)), replace=False).tolist())
                    )
                    new = [int(rng.integers(3))]
                    if user.migrate_pages(old, new) < 0:
                        raise AssertionError("migrate_pages returned a negative count")
                    ops["migrate_pages"] += 1

        @guard
        def pinner() -> None:
            rng = np.random.default_rng(seed + 40)
            while not stop.is_set():
                r = regions[int(rng.integers(len(regions)))]
                with r.proc.pin(r.addr + int(rng.integers(r.npages)) * PAGE_SIZE):
                    time.sleep(0.002)
                ops["pin"] += 1
                time.sleep(0.003)

        @guard
        def injector() -> None:
            rng = np.random.default_rng(seed + 50)
            while not stop.wait(0.02):
                m.inject_alloc_failures(int(rng.integers(3)), 1)
                injected["allocation failures"] += 1
                if rng.random() < 0.1:
                    faults.hang = {0}  # the next batch's first descriptor never completes
                    injected["hung DMA descriptors"] += 1
                    stop.wait(0.01)
                    faults.hang = set()

        threads = [threading.Thread(target=writer, args=(w, 2)) for w in range(2)]
        threads += [
            threading.Thread(target=reader),
            threading.Thread(target=pinner),
            threading.Thread(target=injector),
        ]
        threads += [threading.Thread(target=mover, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if progress:
                progress(min(seconds, seconds - (deadline - time.monotonic())))
        stop.set()
        for t in threads:
            t.join(60)
        # late calls still hold quarantined frames: let them return before accounting
        until = time.monotonic() + 10
        while (hostile.pending or m.stats["engine"]["quarantined_pages"]) and time.monotonic() < until:
            time.sleep(0.01)
        integrity = _check(m, regions, errors)
        hostile_counters = counters(hostile)
        report = {
            "seconds": seconds,
            "seed": seed,
            "policy": policy,
            "verify": verify,
            "operations": dict(ops),
            "pages_moved": m.vmstat["pgmigrate_success"],
            "pages_not_moved": m.vmstat["pgmigrate_fail"],
            "faults_injected": dict(injected)
            | dict(hostile.counts)
            | {
                "folios the offload failed (all causes)": hostile_counters.folios_failures,
                "DMA timeouts": off.timeouts,
                "abandoned calls": hostile_counters.timeouts,
                "stray writes caught and undone": hostile_counters.stray_writes,
                "wrong copies caught and redone": hostile_counters.verify_failures,
            },
            "integrity_ok": integrity,
            "errors": errors,
        }
        report["ok"] = integrity and not errors
        return report
    finally:
        m.close()
        off.close()


def _check(m: Machine, regions: list[Region], errors: list[str]) -> bool:
    ok = True
    for r in regions:
        got = r.proc.read_array(r.addr, r.length).reshape(r.npages, PAGE_SIZE)
        wrong = np.flatnonzero((got != r.model[:, None]).any(axis=1))
        if wrong.size:
            ok = False
            errors.append(f"{wrong.size} pages of the region at {r.addr:#x} hold wrong bytes")
    problems = m.audit()
    errors.extend(problems)
    return ok and not problems
