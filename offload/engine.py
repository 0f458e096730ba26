"""The migration engine: the patched kernel's ``migrate_pages()`` over folio arrays.

Per batch: unmap (allocate destinations, install migration entries) -> one TLB flush
-> batch copy (the scheduler and the active migrator) -> move (reference-count check,
CPU copy of unmarked folios, remap, free the sources). Passes repeat for -EAGAIN;
-ENOMEM splits a large folio and its pieces get one more pass. Every phase works on
whole arrays; nothing here loops per folio.
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import devmem
from .arrays import expand_ranges, folio_pages
from .batch import FolioBatch
from .constants import HPAGE_PMD_ORDER, NR_MAX_MIGRATE_PAGES_RETRY
from .counters import counters
from .node import ISOLATED, MIGRATING
from .scheduler import CopyResult
from .watch import WriteWatch

if TYPE_CHECKING:  # pragma: no cover
    from .machine import Machine


@dataclass
class Folios:
    """Folios as parallel arrays: source node and head pfn, order, target node."""

    node: np.ndarray
    pfn: np.ndarray
    order: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return int(self.pfn.size)

    def __getitem__(self, sel) -> Folios:
        return Folios(self.node[sel], self.pfn[sel], self.order[sel], self.target[sel])

    @staticmethod
    def concat(parts: list[Folios]) -> Folios:
        if not parts:
            e = np.empty(0, dtype=np.int64)
            return Folios(e.astype(np.int32), e, e.astype(np.int8), e.astype(np.int32))
        return Folios(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("node", "pfn", "order", "target")
            )
        )


@dataclass
class Outcome:
    """Result of one migration: every final folio (by source identity) and its rc.

    ``rc[i]`` is 0 when folio ``i`` now lives on ``folios.target[i]``, else -errno
    (the folio stayed intact at its source). A split folio appears as its pieces.
    """

    folios: Folios
    rc: np.ndarray

    def pages_failed(self) -> int:
        """Base pages that did not move."""
        bad = self.rc != 0
        return int((folio_pages(self.folios.order[bad])).sum())


@dataclass
class EngineStats:
    """Cumulative time per phase and work counts, for the benchmarks."""

    unmap_s: float = 0.0
    copy_s: float = 0.0
    move_s: float = 0.0
    batches: int = 0
    passes: int = 0
    folios: int = 0
    tlb_flushes: int = 0
    cpu_fallback_folios: int = 0
    #: perf_counter() time of the first folio remapped by the latest migration
    first_remap_at: float = 0.0
    verify_s: float = 0.0
    verify_failures: int = 0
    #: destination pages held back while an abandoned backend call may write to them
    quarantined_pages: int = 0
    #: watched pages outside the destinations that a backend changed (verify mode)
    stray_writes: int = 0

    def snapshot(self) -> dict:
        """A plain dict copy of the counters."""
        return dict(self.__dict__)


class MigrationEngine:
    """Runs migrations on a :class:`~offload.machine.Machine`.

    Parameters
    ----------
    machine : Machine
        Owner of the nodes, the memory objects, the lock and the counters.
    """

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.stats = EngineStats()
        self._tls = threading.local()
        self._verify_lock = threading.Lock()
        self._rng = np.random.default_rng(0x5EED)

    # -- entry point --------------------------------------------------------------------
    def migrate(self, folios: Folios, reason: str) -> Outcome:
        """Migrate isolated folios to their targets (MIGRATE_SYNC, as move_pages uses).

        The caller has set ISOLATED on every folio; on return it is cleared on all
        that stayed at their source. Counters in ``vmstat`` are updated.
        """
        done: list[Folios] = []
        rcs: list[np.ndarray] = []
        pieces: list[Folios] = []
        ctx = {"current": folios}  # what this call still holds isolated, for error recovery
        self._tls.first = True
        try:
            return self._migrate(folios, reason, done, rcs, pieces, ctx)
        except BaseException:
            # a backend bug: put back every folio still at its source, then report it
            self._putback_after_error(done, rcs, pieces, ctx["current"])
            raise

    def _putback_after_error(self, done, rcs, pieces, current) -> None:
        m = self.m
        with m.lock:
            held = [f[rc != 0] for f, rc in zip(done, rcs) if len(f)] + pieces + [current]
            for f in held:
                if f is None or not len(f):
                    continue
                st = _gather(m.nodes, f.node, f.pfn, "state")
                mine = (st & ISOLATED) != 0
                if mine.any():
                    g = f[mine]
                    _update(
                        m.nodes, g.node, g.pfn, "state", ~np.uint8(ISOLATED | MIGRATING), op="and"
                    )
            m.cond.notify_all()

    def _migrate(self, folios: Folios, reason: str, done, rcs, pieces, ctx) -> Outcome:
        pending = folios
        for _ in range(NR_MAX_MIGRATE_PAGES_RETRY):
            if not len(pending):
                break
            rc = self._one_pass(pending, reason)
            settled = (rc == 0) | (rc == -errno.ENOMEM)
            nomem_large = (rc == -errno.ENOMEM) & (pending.order > 0)
            if nomem_large.any():
                split, stuck = self._split(pending[nomem_large])
                pieces.append(split)
                done.append(stuck)
                rcs.append(np.full(len(stuck), -errno.ENOMEM, dtype=np.int64))
                settled &= ~nomem_large
            if settled.all():
                done.append(pending)
                rcs.append(rc)
                pending = pending[:0]
                ctx["current"] = None
                continue
            done.append(pending[settled])
            rcs.append(rc[settled])
            pending = pending[rc == -errno.EAGAIN]
            ctx["current"] = pending
        if len(pending):
            # still busy after every pass: a pinned folio
            done.append(pending)
            rcs.append(np.full(len(pending), -errno.EBUSY, dtype=np.int64))
        ctx["current"] = None
        if pieces:
            split = Folios.concat(pieces)
            ctx["current"] = split
            pieces.clear()
            rc = self._one_pass(split, reason)
            rc[rc == -errno.EAGAIN] = -errno.EBUSY
            done.append(split)
            rcs.append(rc)
        if len(done) == 1:
            out = Outcome(done[0], rcs[0])
        else:
            out = Outcome(
                Folios.concat(done), np.concatenate(rcs) if rcs else np.empty(0, np.int64)
            )
        self._finish(out)
        return out

    # -- passes and batches ---------------------------------------------------------------
    def _one_pass(self, folios: Folios, reason: str) -> np.ndarray:
        self.stats.passes += 1
        n = len(folios)
        rc = np.zeros(n, dtype=np.int64)
        limit = self.m.batch_pages
        npages = folio_pages(folios.order)
        csum = np.cumsum(npages)
        start = 0
        while start < n:
            base = csum[start - 1] if start else 0
            # cut right after the folio whose pages reach the limit
            end = min(n, int(np.searchsorted(csum, base + limit, side="left")) + 1)
            sl = slice(start, end)
            rc[sl] = self._migrate_batch(folios[sl], reason)
            start = end
        return rc

    def _migrate_batch(self, f: Folios, reason: str) -> np.ndarray:
        m = self.m
        nodes = m.nodes
        n = len(f)
        rc = np.zeros(n, dtype=np.int64)
        dst = np.full(n, -1, dtype=np.int64)
        t0 = time.perf_counter()
        with m.lock:
            # unmap: refcount check, destination allocation, migration entries
            pins = _gather(nodes, f.node, f.pfn, "pins")
            rc[pins > 0] = -errno.EAGAIN
            want = rc == 0
            for d, k, idx in _groups(f.target, f.order, want):
                if nodes[d].fail_allocs > 0:  # injected allocation failure
                    nodes[d].fail_allocs -= 1
                    rc[idx] = -errno.ENOMEM
                    continue
                heads = nodes[d].alloc_folios(idx.size, k)
                dst[idx[: heads.size]] = heads
                rc[idx[heads.size :]] = -errno.ENOMEM
            ok = dst >= 0
            if ok.any():
                _update(nodes, f.node[ok], f.pfn[ok], "state", MIGRATING, op="or")
                self.stats.tlb_flushes += 1
        t1 = time.perf_counter()
        self.stats.unmap_s += t1 - t0
        self.stats.batches += 1
        if not ok.any():
            return rc
        sel = np.flatnonzero(ok)
        g = f[sel]
        batch = FolioBatch(
            g.node, g.pfn, g.target, dst[sel], g.order, memory=m.memory, reason=reason
        )
        res = CopyResult(n=len(batch))
        try:
            keep = self._copy(batch, res)
        except BaseException:
            self._undo_unmap(g, batch, res)
            raise
        if keep is not None and not keep.all():
            # abandoned by a late backend call, and no fresh frame for another copy
            drop = ~keep
            rc[sel[drop]] = -errno.EAGAIN
            with m.lock:
                _update(nodes, g.node[drop], g.pfn[drop], "state", ~np.uint8(MIGRATING), op="and")
                m.cond.notify_all()
            g, batch, sel = g[keep], batch[keep], sel[keep]
        t2 = time.perf_counter()
        self.stats.copy_s += t2 - t1
        return self._move(g, batch, rc, sel, t2)

    def _undo_unmap(self, g: Folios, batch: FolioBatch, res: CopyResult) -> None:
        """Undo the unmap of a batch whose copy step failed: sources stay, destinations
        go (or wait in quarantine while a backend call may still write to them)."""
        m = self.m
        with m.lock:
            pending = res.pending()
            if pending:
                self._quarantine(batch.dst_node, batch.dst_pfn, batch.order, pending)
            else:
                _free(m.nodes, batch.dst_node, batch.dst_pfn, batch.order)
            _update(m.nodes, g.node, g.pfn, "state", ~np.uint8(MIGRATING), op="and")
            m.cond.notify_all()

    def _quarantine(
        self, dnode: np.ndarray, dpfn: np.ndarray, order: np.ndarray, calls: list
    ) -> None:
        """Keep destination folios allocated until every call in *calls* has returned.

        A backend call abandoned at its deadline may still write to them; once it
        returns they are freed. The caller holds the machine lock.
        """
        m = self.m
        dnode, dpfn, order = dnode.copy(), dpfn.copy(), order.copy()
        pages = int(folio_pages(order).sum())
        self.stats.quarantined_pages += pages
        left = [len(calls)]
        lock = threading.Lock()

        def release() -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            with m.lock:
                _free(m.nodes, dnode, dpfn, order)
                self.stats.quarantined_pages -= pages
                m.cond.notify_all()

        if not calls:
            left[0] = 1
            release()
        for c in calls:
            c.on_done(release)

    def _rehome(self, batch: FolioBatch, res: CopyResult) -> np.ndarray:
        """Give the folios of an abandoned call fresh destinations (the old ones wait in
        quarantine). Returns which folios of the batch can go on (False: no frame)."""
        m = self.m
        idx = np.flatnonzero(res.abandoned)
        keep = np.ones(len(batch), dtype=bool)
        with m.lock:
            self._quarantine(
                batch.dst_node[idx], batch.dst_pfn[idx], batch.order[idx], res.pending()
            )
            for d, k, gi in _groups(batch.dst_node[idx], batch.order[idx]):
                pos = idx[gi]
                heads = m.nodes[d].alloc_folios(pos.size, k)
                batch.dst_pfn[pos[: heads.size]] = heads
                keep[pos[heads.size :]] = False
        batch.copied[idx] = False
        return keep

    def _copy(self, batch: FolioBatch, res: CopyResult) -> np.ndarray | None:
        """The batch copy (scheduler and migrator), then a CPU copy of whatever is unmarked.

        Returns None, or (after a backend call was abandoned) which folios go on. In
        verify mode, accesses wait and no other copy step runs meanwhile, so that what
        changes outside the destinations is the backend's doing (see ``offload.watch``).
        """
        m = self.m
        if not m.verify:
            return self._copy_step(batch, res)
        with self._verify_lock, m.lock:
            watch = WriteWatch(m.nodes, batch, self._rng)
            keep = self._copy_step(batch, res)
            by_off = res.by_offload
            by_cpu = batch.copied & ~by_off if by_off is not None else batch.copied.copy()
            strays = watch.check(m.memory)
            if strays:
                blamed = res.migrator if res.migrator is not None else m.cpu
                counters(blamed).add(stray_writes=strays)
                self.stats.stray_writes += strays
            self._verify(batch, res.migrator, by_off, by_cpu)
        return keep

    def _copy_step(self, batch: FolioBatch, res: CopyResult) -> np.ndarray | None:
        m = self.m
        m.scheduler.copy(batch, res)
        keep = self._rehome(batch, res) if res.abandoned is not None else None
        unmarked = ~batch.copied if keep is None else ~batch.copied & keep
        if unmarked.any():
            self.stats.cpu_fallback_folios += int(unmarked.sum())
            cpu = m.scheduler.cpu
            near = unmarked & m.scheduler.cpu_reaches(batch)
            if getattr(cpu, "_trusted", False) and near.any() and not m.scheduler.stuck(cpu):
                sub = batch[near]
                cpu.offload_copy(sub)
                batch.absorb(sub)
            left = unmarked & ~batch.copied
            if left.any():
                # what the CPU path could not or would not copy: the plain page copy,
                # which reaches device memory too (through the CUDA runtime)
                devmem.copy_folios(batch[left])
                batch.copied[left] = True
        return keep

    def _verify(self, batch: FolioBatch, mig, by_off, by_cpu) -> None:
        """Compare every destination with its source; copy again what a backend got wrong."""
        t0 = time.perf_counter()
        bad = verify_batch(batch)
        if bad.any():
            devmem.copy_folios(batch[bad])
            if mig is not None and by_off is not None:
                counters(mig).add(verify_failures=int((bad & by_off).sum()))
            counters(self.m.cpu).add(verify_failures=int((bad & by_cpu).sum()))
            self.stats.verify_failures += int(bad.sum())
        self.stats.verify_s += time.perf_counter() - t0

    def _move(
        self, g: Folios, batch: FolioBatch, rc: np.ndarray, sel: np.ndarray, t2: float
    ) -> np.ndarray:
        """The move phase: reference-count check, remap, free the sources."""
        m = self.m
        nodes = m.nodes
        with m.lock:
            # move: a folio pinned since the unmap goes back and is copied afresh next pass
            pinned = _gather(nodes, g.node, g.pfn, "pins") > 0
            if pinned.any():
                rc[sel[pinned]] = -errno.EAGAIN
                bad = g[pinned]
                _free(nodes, bad.target, batch.dst_pfn[pinned], bad.order)
                _update(nodes, bad.node, bad.pfn, "state", ~np.uint8(MIGRATING), op="and")
                good = ~pinned
                g, dpfn = g[good], batch.dst_pfn[good]
            else:
                dpfn = batch.dst_pfn
            self._remap(g, dpfn)
            self.stats.folios += len(g)
            m.cond.notify_all()
        self.stats.move_s += time.perf_counter() - t2
        return rc

    def _remap(self, g: Folios, dpfn: np.ndarray) -> None:
        """Point every mapping of the moved folios at their copies; free the sources."""
        m = self.m
        nodes = m.nodes
        if not len(g):
            return
        if getattr(self._tls, "first", False):
            self._tls.first = False
            self.stats.first_remap_at = time.perf_counter()
        oid = _gather(nodes, g.node, g.pfn, "obj")
        oidx = _gather(nodes, g.node, g.pfn, "objidx")
        npages = folio_pages(g.order)
        for o, idx in _groups1(oid):
            obj = m.objects[int(o)]
            pages = expand_ranges(oidx[idx], npages[idx])
            node = np.repeat(g.target[idx], npages[idx])
            pfn = expand_ranges(dpfn[idx], npages[idx])
            live = obj.mapcount[pages] > 0  # pages of a partly unmapped folio stay unmapped
            if not live.all():
                pages, node, pfn = pages[live], node[live], pfn[live]
            obj.node[pages] = node
            obj.pfn[pages] = pfn
        for d, idx in _groups1(g.target):
            nd = nodes[d]
            nd.obj[dpfn[idx]] = oid[idx]
            nd.objidx[dpfn[idx]] = oidx[idx]
        if m.cow_rmap:  # some folios are shared copy-on-write (there was a fork)
            cow = _gather(nodes, g.node, g.pfn, "cow")
            if cow.any():
                self._remap_cow(g, dpfn, cow)
        if m.deferred_split:  # a partly unmapped folio moves whole, and stays queued
            for i in np.flatnonzero(g.order > 0).tolist():
                key = (int(g.node[i]), int(g.pfn[i]))
                if key in m.deferred_split:
                    m.deferred_split.discard(key)
                    m.deferred_split.add((int(g.target[i]), int(dpfn[i])))
        for s, idx in _groups1(g.node):
            nodes[s].free_folios(g.pfn[idx], g.order[idx])
        pages = int(npages.sum())
        thp = int((g.order == HPAGE_PMD_ORDER).sum())
        m.vmstat_add("pgmigrate_success", pages)
        if thp:
            m.vmstat_add("thp_migration_success", thp)

    def _remap_cow(self, g: Folios, dpfn: np.ndarray, cow: np.ndarray) -> None:
        """Point the other mappings of folios shared copy-on-write at their copies."""
        m = self.m
        for i in np.flatnonzero(cow).tolist():  # only folios shared since a fork
            s, h, t, nh = int(g.node[i]), int(g.pfn[i]), int(g.target[i]), int(dpfn[i])
            n = 1 << int(g.order[i])
            extras = m.cow_rmap.pop((s, h), [])
            for o, first in extras:
                obj = m.objects.get(o)
                if obj is not None:
                    obj.repoint(first, n, s, h, t, nh)
            if extras:
                m.cow_rmap[(t, nh)] = extras
            m.nodes[t].cow[nh] = cow[i]

    def _split(self, f: Folios) -> tuple[Folios, Folios]:
        """Split large folios (ENOMEM) into order-0 pieces that stay isolated.

        A piece whose page no process maps any more (the folio was partly unmapped
        while pinned, so it could not split then) is freed here, as the kernel frees
        the unmapped tail of a split folio. Returns (the pieces still mapped, folios
        that could not be split because they are pinned).
        """
        m = self.m
        parts = []
        with m.lock:
            # a pinned folio cannot split, nor (here) one shared copy-on-write
            pinned = (_gather(m.nodes, f.node, f.pfn, "pins") > 0) | (
                _gather(m.nodes, f.node, f.pfn, "cow") > 0
            )
            stuck, f = f[pinned], f[~pinned]
            for s, k, idx in _groups(f.node, f.order):
                node = m.nodes[s]
                if m.deferred_split:
                    m.deferred_split.difference_update((s, h) for h in f.pfn[idx].tolist())
                heads = node.split_folios(f.pfn[idx], k)
                target = np.repeat(f.target[idx], 1 << k)
                live = _mapped(m, node, heads)
                if not live.all():
                    dead = heads[~live]
                    node.state[dead] = 0
                    node.free_folios(dead, 0)
                    heads, target = heads[live], target[live]
                parts.append(
                    Folios(
                        np.full(heads.size, s, np.int32),
                        heads,
                        np.zeros(heads.size, np.int8),
                        target,
                    )
                )
            thp = int((f.order == HPAGE_PMD_ORDER).sum())
            if thp:
                m.vmstat_add("thp_migration_split", thp)
            m.cond.notify_all()
        return Folios.concat(parts), stuck

    def _finish(self, out: Outcome) -> None:
        """Put failed folios back (clear ISOLATED) and count the failures."""
        m = self.m
        bad = out.rc != 0
        with m.lock:
            if bad.any():
                f = out.folios[bad]
                _update(m.nodes, f.node, f.pfn, "state", ~np.uint8(ISOLATED | MIGRATING), op="and")
                m.vmstat_add("pgmigrate_fail", int(folio_pages(f.order).sum()))
                thp = int((f.order == HPAGE_PMD_ORDER).sum())
                if thp:
                    m.vmstat_add("thp_migration_fail", thp)
            m.cond.notify_all()


# -- grouping helpers: loops over distinct nodes / orders / objects, never folios ---------
def _groups1(keys: np.ndarray):
    """Yield (key, indices) for each distinct key."""
    if keys.size == 0:
        return
    first = keys[0]
    if (keys == first).all():
        yield int(first), np.arange(keys.size)
        return
    for k in np.unique(keys):
        yield int(k), np.flatnonzero(keys == k)


def _groups(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None):
    """Yield (a, b, indices) for each distinct pair, restricted to *mask*."""
    base = np.arange(a.size) if mask is None else np.flatnonzero(mask)
    if base.size == 0:
        return
    aa, bb = a[base], b[base]
    if (aa == aa[0]).all() and (bb == bb[0]).all():
        yield int(aa[0]), int(bb[0]), base
        return
    key = aa.astype(np.int64) * 64 + bb.astype(np.int64)
    for k in np.unique(key):
        sel = key == k
        yield int(k // 64), int(k % 64), base[sel]


def _free(nodes, nid: np.ndarray, heads: np.ndarray, order: np.ndarray) -> None:
    """Free the folios at (``nid[i]``, ``heads[i]``) of ``order[i]``, grouped by node and
    order (destinations given up, or released from quarantine)."""
    for d, k, idx in _groups(nid, order):
        nodes[d].free_folios(heads[idx], k)


def _mapped(m: Machine, node, pfns: np.ndarray) -> np.ndarray:
    """Per page frame of *node* (order-0 folios): whether a process still maps it."""
    out = np.zeros(pfns.size, dtype=bool)
    oid = node.obj[pfns]
    for o, idx in _groups1(oid):
        obj = m.objects.get(o)
        if obj is not None:
            out[idx] = obj.mapcount[node.objidx[pfns[idx]]] > 0
    return out


def _gather(nodes, nid: np.ndarray, pfn: np.ndarray, attr: str) -> np.ndarray:
    """``nodes[nid[i]].<attr>[pfn[i]]`` for every i."""
    if nid.size == 0:
        return np.empty(0, dtype=getattr(nodes[0], attr).dtype)
    first = int(nid[0])
    if (nid == first).all():
        return getattr(nodes[first], attr)[pfn]
    out = np.empty(nid.size, dtype=getattr(nodes[0], attr).dtype)
    for s, idx in _groups1(nid):
        out[idx] = getattr(nodes[s], attr)[pfn[idx]]
    return out


def _update(nodes, nid: np.ndarray, pfn: np.ndarray, attr: str, value, op: str = "set") -> None:
    """Set, OR or AND ``nodes[nid[i]].<attr>[pfn[i]]`` with *value*."""
    for s, idx in _groups1(nid):
        arr = getattr(nodes[s], attr)
        p = pfn[idx]
        if op == "set":
            arr[p] = value
        elif op == "or":
            arr[p] |= value
        else:
            arr[p] &= value


def verify_batch(batch: FolioBatch, chunk: int = 8192) -> np.ndarray:
    """Per folio: whether its destination differs from its source (vectorised, chunked).

    Runs contiguous on both sides are compared in place, a chunk at a time, and only a
    run that differs is looked at page by page; scattered folios are gathered.
    """
    n = len(batch)
    runs = batch.runs("both")
    host = not any(
        devmem.on_device(batch.memory[int(x)])
        for x in np.unique(np.concatenate((batch.src_node, batch.dst_node)))
    )
    if host and len(runs) * 16 <= max(64, n):
        bad = np.zeros(n, dtype=bool)
        for r in range(len(runs)):
            s64 = batch.memory[int(runs.src_node[r])].view(np.uint64)
            d64 = batch.memory[int(runs.dst_node[r])].view(np.uint64)
            sp, dp, k = int(runs.src_pfn[r]), int(runs.dst_pfn[r]), int(runs.npages[r])
            for lo in range(0, k, chunk):
                hi = min(k, lo + chunk)
                if np.not_equal(s64[sp + lo : sp + hi], d64[dp + lo : dp + hi]).any():
                    a, b = int(runs.start[r]), int(runs.stop[r])
                    bad[a:b] |= _verify_pages(batch[a:b], chunk)
                    break
        return bad
    return _verify_pages(batch, chunk)


def _verify_pages(batch: FolioBatch, chunk: int) -> np.ndarray:
    n = len(batch)
    npg = batch.npages
    sn, sp, dn, dp = batch.pages()
    page_bad = np.zeros(sp.size, dtype=bool)
    for lo in range(0, sp.size, chunk):
        sl = slice(lo, lo + chunk)
        for s, idx in _groups1(sn[sl]):
            for d, jdx in _groups1(dn[sl][idx]):
                at = lo + idx[jdx]
                src = devmem.gather_words(batch.memory[s], sp[at])
                dst = devmem.gather_words(batch.memory[d], dp[at])
                page_bad[at] = (src != dst).any(axis=1)
    if not page_bad.any():
        return np.zeros(n, dtype=bool)
    starts = np.concatenate(([0], np.cumsum(npg)[:-1]))
    return np.logical_or.reduceat(page_bad, starts)
