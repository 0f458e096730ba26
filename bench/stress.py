"""``offload bench stress``: random migrations under accessors and injected faults."""

from __future__ import annotations

import errno
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from offload import MPOL_MF_MOVE_ALL, PAGE_SIZE, Machine, Migrator, Process
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
    proc: Process
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
    stress = Stress(seed, policy, verify)
    try:
        stress.run(seconds, progress)
        return stress.report(seconds)
    finally:
        stress.close()


class Stress:
    """Three nodes, four regions of a user process (one shared with root), and the
    threads that write, read, move, pin and inject faults until told to stop."""

    def __init__(self, seed: int, policy: str, verify: bool) -> None:
        from offload.backends.dcbm import DmaThreads, Faults

        self.seed, self.policy, self.verify = seed, policy, verify
        self.faults = Faults(fail_every=13, reorder=True)
        self.off = DmaThreads(channels=4, timeout=0.05, faults=self.faults)
        self.hostile = Hostile(self.off, seed + 60, late_s=0.25, stray=verify)
        self.ops: Counter = Counter()
        self.injected: Counter = Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.m = Machine(
            nodes="40M,40M,40M",
            cpu="cpu-batched:threads=2",
            offload=self.hostile,
            policy=policy,
            # even seeds: batches of 256 pages (a THP alone); odd: 2048 (two THPs, or
            # many small folios, in one batch)
            batch_pages=256 if seed % 2 == 0 else 2048,
            verify=verify,
            offload_timeout=0.1,
        )
        self.user = self.m.spawn(uid=1000)
        self.root = self.m.spawn(uid=0)
        self.regions: list[Region] = []
        for length, fs, shared in (
            (2 << 20, PAGE_SIZE, False),
            (4 << 20, 16 * PAGE_SIZE, False),
            (4 << 20, 1 << 21, False),
            (1 << 20, PAGE_SIZE, True),
        ):
            a = self.user.mmap(length, node=0, folio_size=fs, shared=shared)
            self.regions.append(
                Region(self.user, a, length, np.zeros(length // PAGE_SIZE, np.uint8))
            )
        self.shared = self.regions[-1]
        self.shared_in_root = self.user.share(self.shared.addr, self.shared.length, into=self.root)
        self.root.read(self.shared_in_root, self.shared.length)  # root's PTEs: mapped twice

    # -- the run --------------------------------------------------------------------------
    def run(self, seconds: float, progress=None) -> None:
        """Start every thread, let them run for *seconds*, stop and join them, then wait
        (10 s at most) for late backend calls to give their quarantined frames back."""
        targets: list[tuple[Callable[..., None], tuple]] = [(self.writer, (w, 2)) for w in range(2)]
        targets += [(self.reader, ()), (self.pinner, ()), (self.injector, ())]
        targets += [(self.mover, (k,)) for k in range(2)]
        threads = [threading.Thread(target=self._guard, args=(f, *a)) for f, a in targets]
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if progress:
                progress(min(seconds, seconds - (deadline - time.monotonic())))
        self.stop.set()
        for t in threads:
            t.join(60)
        until = time.monotonic() + 10
        while (
            self.hostile.pending or self.m.stats["engine"]["quarantined_pages"]
        ) and time.monotonic() < until:
            time.sleep(0.01)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # every failure is a finding
            with self.lock:
                self.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
            self.stop.set()

    def report(self, seconds: float) -> dict:
        """What ran, what was injected, and the verdict (contents and frame accounting)."""
        integrity = _check(self.m, self.regions, self.errors)
        c = counters(self.hostile)
        m = self.m
        return {
            "seconds": seconds,
            "seed": self.seed,
            "policy": self.policy,
            "verify": self.verify,
            "operations": dict(self.ops),
            "pages_moved": m.vmstat["pgmigrate_success"],
            "pages_not_moved": m.vmstat["pgmigrate_fail"],
            "faults_injected": dict(self.injected)
            | dict(self.hostile.counts)
            | {
                "folios the offload failed (all causes)": c.folios_failures,
                "DMA timeouts": self.off.timeouts,
                "abandoned calls": c.timeouts,
                "stray writes caught and undone": c.stray_writes,
                "wrong copies caught and redone": c.verify_failures,
            },
            "integrity_ok": integrity,
            "errors": self.errors,
            "ok": integrity and not self.errors,
        }

    def close(self) -> None:
        """Close the machine, then the DMA backend."""
        self.m.close()
        self.off.close()

    # -- the threads ------------------------------------------------------------------------
    def _rng(self, offset: int) -> np.random.Generator:
        return np.random.default_rng(self.seed + offset)

    def _region(self, rng: np.random.Generator) -> Region:
        return self.regions[int(rng.integers(len(self.regions)))]

    def writer(self, w: int, nw: int) -> None:
        """Write whole pages w, w+nw, ... of random regions, and remember the value."""
        rng = self._rng(10 + w)
        while not self.stop.is_set():
            r = self._region(rng)
            page = int(rng.integers(r.npages // nw)) * nw + w
            v = int(rng.integers(1, 256))
            r.proc.write(r.addr + page * PAGE_SIZE, bytes([v]) * PAGE_SIZE)
            r.model[page] = v
            self.ops["write"] += 1

    def reader(self) -> None:
        """Read random pages; a page must never be seen half old, half new."""
        rng = self._rng(20)
        while not self.stop.is_set():
            r = self._region(rng)
            page = int(rng.integers(r.npages))
            got = r.proc.read_array(r.addr + page * PAGE_SIZE, PAGE_SIZE)
            if (got != got[0]).any():
                raise AssertionError(f"torn read of page {page} at {r.addr:#x}")
            self.ops["read"] += 1

    def mover(self, k: int) -> None:
        """move_pages of random pages, MOVE_ALL of the shared region, migrate_pages."""
        rng = self._rng(30 + k)
        while not self.stop.is_set():
            choice = rng.random()
            if choice < 0.6:
                self._move_some(rng)
            elif choice < 0.8:
                self._move_shared(rng)
            else:
                self._migrate(rng)

    def _move_some(self, rng: np.random.Generator) -> None:
        r = self._region(rng)
        n = int(rng.integers(1, r.npages + 1))
        idx = np.sort(rng.choice(r.npages, n, replace=False))
        target = int(rng.integers(3))
        res = r.proc.move_pages(r.addr + idx * PAGE_SIZE, [target] * n)
        bad = set(res.status) - {target} - ALLOWED_STATUS
        if bad:
            raise AssertionError(f"move_pages gave statuses {sorted(bad)}")
        self.ops["move_pages"] += 1

    def _move_shared(self, rng: np.random.Generator) -> None:
        target = int(rng.integers(3))
        n = self.shared.npages
        res = self.root.move_pages(
            self.shared_in_root + np.arange(n) * PAGE_SIZE, [target] * n, flags=MPOL_MF_MOVE_ALL
        )
        if set(res.status) - {target, -errno.EBUSY, -errno.ENOMEM}:
            raise AssertionError(f"MOVE_ALL gave statuses {sorted(set(res.status))}")
        self.ops["move_pages_all"] += 1

    def _migrate(self, rng: np.random.Generator) -> None:
        old = sorted(set(rng.choice(3, int(rng.integers(1, 3)), replace=False).tolist()))
        if self.user.migrate_pages(old, [int(rng.integers(3))]) < 0:
            raise AssertionError("migrate_pages returned a negative count")
        self.ops["migrate_pages"] += 1

    def pinner(self) -> None:
        """Pin random pages for a few milliseconds (the migration must wait or fail)."""
        rng = self._rng(40)
        while not self.stop.is_set():
            r = self._region(rng)
            with r.proc.pin(r.addr + int(rng.integers(r.npages)) * PAGE_SIZE):
                time.sleep(0.002)
            self.ops["pin"] += 1
            time.sleep(0.003)

    def injector(self) -> None:
        """Every 20 ms an allocation failure; now and then a DMA descriptor that hangs."""
        rng = self._rng(50)
        while not self.stop.wait(0.02):
            self.m.inject_alloc_failures(int(rng.integers(3)), 1)
            self.injected["allocation failures"] += 1
            if rng.random() < 0.1:
                self.faults.hang = {0}  # the next batch's first descriptor never completes
                self.injected["hung DMA descriptors"] += 1
                self.stop.wait(0.01)
                self.faults.hang = set()


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
