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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from . import devmem, kernels
from .arrays import folio_pages, total_pages
from .batch import FolioBatch
from .constants import HPAGE_PMD_ORDER, NR_MAX_MIGRATE_PAGES_RETRY
from .control import OffloadControl
from .counters import Vmstat, counters
from .folios import Folios, clear_state, free_folios, gather, groups, groups1, update
from .node import ISOLATED, MIGRATING
from .rmap import Rmap
from .scheduler import CopyResult, Policy, Scheduler
from .watch import WriteWatch

if TYPE_CHECKING:  # pragma: no cover
    from .guard import CallRunner, GuardedCall
    from .kernels import Kernel
    from .migrator import Migrator
    from .node import Node


@dataclass
class Outcome:
    """Result of one migration: every final folio (by source identity) and its rc.

    ``rc[i]`` is 0 when folio ``i`` now lives on ``folios.dst_node[i]``, else -errno
    (the folio stayed intact at its source). A split folio appears as its pieces.
    """

    folios: Folios
    rc: np.ndarray

    def pages_failed(self) -> int:
        """Base pages that did not move."""
        bad = self.rc != 0
        return total_pages(self.folios.order[bad])


@dataclass
class MigrationLists:
    """The lists of one migration, by the names migrate_pages() gives them.

    Attributes
    ----------
    from_ : Folios or None
        The folios still to try (the kernel's ``from``), held ISOLATED.
    split_folios : list of Folios
        The pieces of large folios split (on -ENOMEM, or partly mapped ones where the
        kernel version splits them), tried once more at the end.
    ret_folios : list of Folios
        The folios settled so far, with their rc in ``ret_rc`` (0: migrated).
    """

    from_: Folios | None
    split_folios: list[Folios] = field(default_factory=list)
    ret_folios: list[Folios] = field(default_factory=list)
    ret_rc: list[np.ndarray] = field(default_factory=list)

    def settle(self, f: Folios, rc: np.ndarray) -> None:
        """Folios *f* are done trying, with outcomes *rc*."""
        self.ret_folios.append(f)
        self.ret_rc.append(rc)

    def held(self) -> list[Folios]:
        """What may still be isolated: settled failures, split pieces, ``from``."""
        out = [f[rc != 0] for f, rc in zip(self.ret_folios, self.ret_rc) if len(f)]
        out += self.split_folios
        if self.from_ is not None:
            out.append(self.from_)
        return out

    def outcome(self) -> Outcome:
        """Every settled folio with its rc."""
        if len(self.ret_folios) == 1:
            return Outcome(self.ret_folios[0], self.ret_rc[0])
        rc = np.concatenate(self.ret_rc) if self.ret_rc else np.empty(0, np.int64)
        return Outcome(Folios.concat(self.ret_folios), rc)


@dataclass
class EngineStats:
    """Cumulative time per phase and work counts, for the benchmarks."""

    unmap_s: float = 0.0
    copy_s: float = 0.0
    #: CPU time of the whole process during the copy steps (all its threads)
    copy_cpu_s: float = 0.0
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
    """Runs migrations over the nodes of a machine.

    The phases are named as in ``mm/migrate.c``: :meth:`migrate` (``migrate_pages``)
    runs passes of :meth:`migrate_batch` (``migrate_pages_batch``), each of which is
    :meth:`unmap` (``migrate_folio_unmap`` and one TLB flush), :meth:`copy` (the batch
    copy: scheduler, migrator, CPU fallback) and :meth:`move` (``migrate_folio_move``).
    What goes wrong is undone by :meth:`undo_src` and :meth:`undo_dst`
    (``migrate_folio_undo_src`` / ``_dst``), and the folios that did not move are put
    back by :meth:`putback`.

    Parameters
    ----------
    nodes : sequence of Node
        The memory nodes.
    rmap : Rmap
        Which objects map each folio.
    vmstat : Vmstat
        The migration counters of ``/proc/vmstat``.
    cond : threading.Condition
        The machine lock, and where waiters for folios under migration sleep.
    batch_pages : int
        NR_MAX_BATCHED_MIGRATION, the batch limit in base pages.
    cpu, policy, runner, timeout
        The CPU copy path, the scheduler policy, the workers and the deadline of
        guarded backend calls: what the engine's :class:`Scheduler` is built from.
    verify : bool
        Check every copy (see :class:`~offload.machine.Machine`).
    memory : Mapping, optional
        Node id -> frames (default: built from *nodes*).
    kernel : Kernel, optional
        The kernel version it follows (default: the newest supported).
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        rmap: Rmap,
        vmstat: Vmstat,
        cond: threading.Condition,
        batch_pages: int,
        *,
        cpu: Migrator,
        policy: Policy,
        runner: CallRunner,
        timeout: float,
        verify: bool = False,
        memory: Mapping[int, Any] | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self.nodes = nodes
        #: the kernel version whose behaviours the engine follows
        self.kernel = kernel if kernel is not None else kernels.kernel()
        #: node id -> frames, the mapping every batch refers to (the machine's own)
        self.memory = (
            memory if memory is not None else MappingProxyType({n.id: n.frames for n in nodes})
        )
        self.rmap = rmap
        #: the registration of the migrator (migrate_offload_register lives in
        #: mm/migrate.c too); its ``stats`` are the scheduler's report
        self.offload = OffloadControl(report=lambda: self.scheduler.report())
        #: the batch-copy step: every copy of a batch is its decision
        self.scheduler = Scheduler(
            cpu, policy, list(nodes), runner, timeout, self.offload, batch_pages=batch_pages
        )
        self.vmstat = vmstat
        self.cond = cond
        self.batch_pages = batch_pages
        self.verify = verify
        self.stats = EngineStats()
        #: base pages of destination folios allocated by migrations in flight and not
        #: yet remapped or given up (so that an audit at any moment accounts for them)
        self.dst_pages = 0
        self._tls = threading.local()
        self._verify_lock = threading.Lock()
        self._rng = np.random.default_rng(0x5EED)

    # -- migrate_pages ------------------------------------------------------------------
    def isolate(self, f: Folios) -> bool:
        """Take the folios *f* for a migration (set ISOLATED), unless a migration already
        holds one of them: then take none and return False. The caller holds the lock."""
        state = gather(self.nodes, f.src_node, f.src_pfn, "state")
        if (state & ISOLATED).any():
            return False
        # the state read once, for the check and the update (the caller holds the lock)
        update(self.nodes, f.src_node, f.src_pfn, "state", state | ISOLATED)
        return True

    def migrate(self, folios: Folios, reason: str) -> Outcome:
        """Migrate isolated folios to their targets (MIGRATE_SYNC, as move_pages uses).

        The caller has isolated every folio (:meth:`isolate`); on return every folio
        that stayed at its source is put back. Counters in ``vmstat`` are updated.
        """
        lists = MigrationLists(from_=folios)
        self._tls.first = True
        try:
            return self._migrate(lists, reason)
        except BaseException:
            self._undo(lists)  # a backend bug: the kernel's ``out:``, then report it
            raise

    def _undo(self, lists: MigrationLists) -> None:
        """Put back every folio a failed migration still holds at its source (the one
        place where a migration is undone)."""
        with self.cond:
            for f in lists.held():
                mine = (gather(self.nodes, f.src_node, f.src_pfn, "state") & ISOLATED) != 0
                self.undo_src(f[mine], ISOLATED | MIGRATING)

    def migrate_one(self, nid: int, pfn: int, target: int, reason: str) -> int | None:
        """:meth:`migrate` of one base page (an order-0 folio) in scalars: a one-page
        move_pages. The caller holds the lock, and keeps holding it.

        Only the plain case runs here: no migrator for *reason* (the trusted CPU path
        copies, on this thread), no verify mode, host memory on both sides, the folio
        not pinned, a free frame on *target* and no injected failure. Then the effects
        are those of :meth:`migrate` on a one-folio batch: the same frame from the same
        allocator, the same counters and statistics, with no other thread able to see
        the steps in between. Otherwise nothing is touched and None is returned: the
        caller isolates the folio and runs :meth:`migrate`.

        Returns
        -------
        int or None
            0 (moved), or None (take the general path).
        """
        src, dst = self.nodes[nid], self.nodes[target]
        if (
            self.verify
            or src.order[pfn] != 0
            or src.state[pfn]
            or src.pins[pfn]
            or dst.fail_allocs
            or dst.buddy.free_pages == 0
            or src.kind != "dram"
            or dst.kind != "dram"
            or not self.scheduler.cpu_inline(reason)
        ):
            return None
        # the steps of migrate(): one pass, one batch, one flush; the same accounting
        t0 = time.perf_counter()
        self._counted_pass()
        d = dst.alloc_folio(0)  # cannot fail: a free frame of any order splits
        self._counted_flush()
        t1 = self._counted_unmap(t0)
        self.scheduler.copy_page(src, pfn, dst, d)
        t2 = self._counted_copy(t1)
        self._counted_first_remap(t2)
        self.rmap.remap_folio(self.nodes, nid, pfn, 0, target, d)
        src.free_folio(pfn, 0)
        self._counted_moved(1, 0, 1)
        self.cond.notify_all()
        self._counted_move(t2)
        return 0

    # -- accounting: one place for what both paths count ------------------------------------
    def _counted_pass(self) -> None:
        self.stats.passes += 1

    def _counted_flush(self) -> None:
        self.stats.tlb_flushes += 1

    def _counted_unmap(self, t0: float) -> tuple[float, float]:
        """A batch through its unmap phase, started at *t0*; returns the time now and the
        process's CPU time now (the copy step starts)."""
        t1 = time.perf_counter()
        self.stats.unmap_s += t1 - t0
        self.stats.batches += 1
        return t1, time.process_time()

    def _counted_copy(self, start: tuple[float, float]) -> float:
        """The copy step that began at *start* (wall, CPU) ends; returns the time now."""
        t2 = time.perf_counter()
        self.stats.copy_s += t2 - start[0]
        # every thread of the process: the copy threads, not the caller that waits
        self.stats.copy_cpu_s += time.process_time() - start[1]
        return t2

    def _counted_move(self, t2: float) -> None:
        self.stats.move_s += time.perf_counter() - t2

    def _counted_first_remap(self, at: float) -> None:
        self.stats.first_remap_at = at

    def _counted_moved(self, pages: int, thps: int, folios: int) -> None:
        """Folios remapped to their copies (the caller holds the lock)."""
        self.vmstat.add("pgmigrate_success", pages)
        self.vmstat.add("thp_migration_success", thps)
        self.stats.folios += folios

    def _migrate(self, lists: MigrationLists, reason: str) -> Outcome:
        """migrate_pages(): passes over ``from`` until every folio is settled, then one
        more pass over ``split_folios``; every failed folio is put back."""
        if self.kernel.split_partly_mapped_thp:
            self.split_partly_mapped(lists)
        for _ in range(NR_MAX_MIGRATE_PAGES_RETRY):
            pending = lists.from_
            if pending is None or not len(pending):
                break
            rc = self._one_pass(pending, reason)
            settled = (rc == 0) | (rc == -errno.ENOMEM)
            nomem_large = (rc == -errno.ENOMEM) & (pending.order > 0)
            if nomem_large.any():
                split, stuck = self.split(pending[nomem_large])
                lists.split_folios.append(split)
                lists.settle(stuck, np.full(len(stuck), -errno.ENOMEM, dtype=np.int64))
                settled &= ~nomem_large
            if settled.all():
                lists.settle(pending, rc)
                lists.from_ = None
                continue
            lists.settle(pending[settled], rc[settled])
            lists.from_ = pending[rc == -errno.EAGAIN]
        if lists.from_ is not None and len(lists.from_):
            # still busy after every pass: a pinned folio
            busy = lists.from_
            lists.settle(busy, np.full(len(busy), -errno.EBUSY, dtype=np.int64))
        lists.from_ = None
        if lists.split_folios:
            split = Folios.concat(lists.split_folios)
            lists.from_, lists.split_folios = split, []
            rc = self._one_pass(split, reason)
            rc[rc == -errno.EAGAIN] = -errno.EBUSY
            lists.settle(split, rc)
            lists.from_ = None
        out = lists.outcome()
        self.putback(out)
        return out

    def _one_pass(self, folios: Folios, reason: str) -> np.ndarray:
        """One pass over *folios*, in batches of at most ``batch_pages`` base pages."""
        self._counted_pass()
        n = len(folios)
        rc = np.zeros(n, dtype=np.int64)
        if n == 0:  # nothing to move (a split that left no folio): no batch at all
            return rc
        if n == 1 or total_pages(folios.order) <= self.batch_pages:
            # one folio is one batch, whatever its size; so are folios within the limit
            return self.migrate_batch(folios, reason)
        limit = self.batch_pages
        csum = np.cumsum(folio_pages(folios.order))
        start = 0
        while start < n:
            base = csum[start - 1] if start else 0
            # cut right after the folio whose pages reach the limit
            end = min(n, int(np.searchsorted(csum, base + limit, side="left")) + 1)
            sl = slice(start, end)
            rc[sl] = self.migrate_batch(folios[sl], reason)
            start = end
        return rc

    # -- migrate_pages_batch --------------------------------------------------------------
    def migrate_batch(self, f: Folios, reason: str) -> np.ndarray:
        """Unmap, copy and move one batch; return each folio's rc (0, -EAGAIN, -ENOMEM)."""
        t0 = time.perf_counter()
        rc, dst = self.unmap(f)
        t1 = self._counted_unmap(t0)
        ok = dst >= 0
        if ok.all():  # every folio unmapped: no selection to make
            sel, g = np.arange(len(f)), f
        elif not ok.any():
            return rc
        else:
            sel = np.flatnonzero(ok)
            g = f[sel]
        batch = FolioBatch(
            g.src_node, g.src_pfn, g.dst_node, dst[sel], g.order, memory=self.memory, reason=reason
        )
        res = CopyResult(n=len(batch))
        try:
            keep = self.copy(batch, res)
        except BaseException:
            with self.cond:
                self.undo_dst(batch.dst_node, batch.dst_pfn, batch.order, res.pending())
                self.undo_src(g, MIGRATING)
            raise
        if keep is not None and not keep.all():
            # abandoned by a late backend call, and no fresh frame for another copy (the
            # old destinations wait in quarantine)
            drop = ~keep
            rc[sel[drop]] = -errno.EAGAIN
            with self.cond:
                self.undo_src(g[drop], MIGRATING)
            g, batch, sel = g[keep], batch[keep], sel[keep]
        t2 = self._counted_copy(t1)
        self.move(g, batch, rc, sel)
        self._counted_move(t2)
        return rc

    def unmap(self, f: Folios) -> tuple[np.ndarray, np.ndarray]:
        """The unmap phase: reference-count check, destination allocation, migration
        entries (MIGRATING), one TLB flush for the batch.

        Returns (rc per folio: 0, -EAGAIN pinned, -ENOMEM no destination; the
        destination head per folio, -1 where none).
        """
        nodes = self.nodes
        n = len(f)
        rc = np.zeros(n, dtype=np.int64)
        dst = np.full(n, -1, dtype=np.int64)
        with self.cond:
            pins = gather(nodes, f.src_node, f.src_pfn, "pins")
            rc[pins > 0] = -errno.EAGAIN
            for d, k, idx in groups(f.dst_node, f.order, rc == 0):
                if nodes[d].fail_allocs > 0:  # injected allocation failure
                    nodes[d].fail_allocs -= 1
                    rc[idx] = -errno.ENOMEM
                    continue
                heads = nodes[d].alloc_folios(idx.size, k)
                if idx.size == n and heads.size == n:  # the whole batch: no index arrays
                    dst[:] = heads
                    continue
                dst[idx[: heads.size]] = heads
                rc[idx[heads.size :]] = -errno.ENOMEM
            ok = dst >= 0
            if ok.any():
                got = slice(None) if ok.all() else ok  # all of them: views, no copies
                self.dst_pages += total_pages(f.order[got])
                update(nodes, f.src_node[got], f.src_pfn[got], "state", MIGRATING, op="or")
                self._counted_flush()
        return rc, dst

    def move(self, g: Folios, batch: FolioBatch, rc: np.ndarray, sel: np.ndarray) -> None:
        """The move phase: reference-count check, remap, free the sources.

        A folio pinned since the unmap is undone (rc -EAGAIN at ``rc[sel[i]]``) and is
        copied afresh in the next pass.
        """
        with self.cond:
            pinned = gather(self.nodes, g.src_node, g.src_pfn, "pins") > 0
            if pinned.any():
                rc[sel[pinned]] = -errno.EAGAIN
                bad = g[pinned]
                self.undo_dst(bad.dst_node, batch.dst_pfn[pinned], bad.order)
                self.undo_src(bad, MIGRATING)
                good = ~pinned
                g, dpfn = g[good], batch.dst_pfn[good]
            else:
                dpfn = batch.dst_pfn
            moved = total_pages(g.order)
            if len(g):
                if getattr(self._tls, "first", False):
                    self._tls.first = False
                    self._counted_first_remap(time.perf_counter())
                self.dst_pages -= moved
                self.rmap.remove_migration_ptes(self.nodes, g, dpfn)
                for s, idx in groups1(g.src_node):
                    whole = idx.size == len(g)  # one source node: no copies of the arrays
                    pfn, order = (g.src_pfn, g.order) if whole else (g.src_pfn[idx], g.order[idx])
                    self.nodes[s].free_folios(pfn, order)
            self._counted_moved(moved, _thps(g.order), len(g))
            self.cond.notify_all()

    # -- undo -----------------------------------------------------------------------------
    def undo_src(self, f: Folios, bits: int = MIGRATING) -> None:
        """Give the source folios *f* back their mappings (clear MIGRATING) or, with
        ``ISOLATED`` in *bits*, put them back for good. The caller holds the lock."""
        if len(f):
            clear_state(self.nodes, f.src_node, f.src_pfn, bits)
            self.cond.notify_all()

    def undo_dst(
        self,
        nid: np.ndarray,
        dpfn: np.ndarray,
        order: np.ndarray,
        pending: list[GuardedCall] | None = None,
    ) -> None:
        """Free the destination folios given up, or, while backend calls in *pending*
        may still write to them, keep them in quarantine until those return. The
        caller holds the lock."""
        self.dst_pages -= total_pages(order)
        if pending:
            self._quarantine(nid, dpfn, order, pending)
        else:
            free_folios(self.nodes, nid, dpfn, order)

    def _quarantine(
        self, dnode: np.ndarray, dpfn: np.ndarray, order: np.ndarray, calls: list[GuardedCall]
    ) -> None:
        """Keep destination folios allocated until every call in *calls* has returned."""
        dnode, dpfn, order = dnode.copy(), dpfn.copy(), order.copy()
        pages = total_pages(order)
        self.stats.quarantined_pages += pages
        left = [len(calls)]
        lock = threading.Lock()

        def release() -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            with self.cond:
                free_folios(self.nodes, dnode, dpfn, order)
                self.stats.quarantined_pages -= pages
                self.cond.notify_all()

        for c in calls:
            c.on_done(release)

    def putback(self, out: Outcome) -> None:
        """Put the folios that did not move back (clear ISOLATED) and count them."""
        bad = out.rc != 0
        with self.cond:
            if bad.any():
                f = out.folios[bad]
                self.undo_src(f, ISOLATED | MIGRATING)
                self.vmstat.add("pgmigrate_fail", total_pages(f.order))
                self.vmstat.add("thp_migration_fail", _thps(f.order))
            self.cond.notify_all()

    # -- the batch copy ---------------------------------------------------------------------
    def copy(self, batch: FolioBatch, res: CopyResult) -> np.ndarray | None:
        """The batch copy (scheduler and migrator), then a CPU copy of whatever is unmarked.

        Returns None, or (after a backend call was abandoned) which folios go on. In
        verify mode, accesses wait and no other copy step runs meanwhile, so that what
        changes outside the destinations is the backend's doing (see ``offload.watch``).
        """
        if not self.verify:
            return self._copy_step(batch, res)
        with self._verify_lock, self.cond:
            watch = WriteWatch(self.nodes, batch, self._rng)
            keep = self._copy_step(batch, res)
            by_off = res.by_offload
            by_cpu = batch.copied & ~by_off if by_off is not None else batch.copied.copy()
            strays = watch.check(self.memory)
            if strays:
                # the watch cannot tell whose write it was: each provider that was given
                # folios of the batch is charged (the CPU path where none was)
                for blamed in res.given or [self.scheduler.cpu]:
                    counters(blamed).add(stray_writes=strays)
                self.stats.stray_writes += strays
            self._verify(batch, res, by_cpu)
        return keep

    def _copy_step(self, batch: FolioBatch, res: CopyResult) -> np.ndarray | None:
        """The scheduler copies the whole batch (who copies what is its decision); the
        engine gives fresh destinations to the folios of an abandoned call."""
        self.scheduler.copy(batch, res, rehome=self._rehome)
        self.stats.cpu_fallback_folios += res.fallback
        return res.keep

    def _rehome(self, batch: FolioBatch, res: CopyResult) -> np.ndarray:
        """Give the folios of an abandoned call fresh destinations (the old ones wait in
        quarantine). Returns which folios of the batch can go on (False: no frame)."""
        assert res.abandoned is not None
        idx = np.flatnonzero(res.abandoned)
        keep = np.ones(len(batch), dtype=bool)
        with self.cond:
            self.undo_dst(batch.dst_node[idx], batch.dst_pfn[idx], batch.order[idx], res.pending())
            for d, k, gi in groups(batch.dst_node[idx], batch.order[idx]):
                pos = idx[gi]
                heads = self.nodes[d].alloc_folios(pos.size, k)
                self.dst_pages += heads.size << k
                batch.dst_pfn[pos[: heads.size]] = heads
                keep[pos[heads.size :]] = False
        batch.copied[idx] = False
        return keep

    def _verify(self, batch: FolioBatch, res: CopyResult, by_cpu: np.ndarray) -> None:
        """Compare every destination with its source; copy again what a backend got wrong,
        and count it against the provider (or the CPU path) that marked it copied."""
        t0 = time.perf_counter()
        bad = verify_batch(batch)
        if bad.any():
            devmem.copy_folios(batch[bad])
            if res.by_provider is not None:
                for i, mig in enumerate(res.providers):
                    counters(mig).add(verify_failures=int((bad & (res.by_provider == i)).sum()))
            counters(self.scheduler.cpu).add(verify_failures=int((bad & by_cpu).sum()))
            self.stats.verify_failures += int(bad.sum())
        self.stats.verify_s += time.perf_counter() - t0

    # -- split ------------------------------------------------------------------------------
    def split(self, f: Folios, freed: list[Folios] | None = None) -> tuple[Folios, Folios]:
        """Split large folios (ENOMEM, or partly mapped ones on kernels with switch
        ``split_partly_mapped_thp``) into order-0 pieces that stay isolated.

        A piece whose page no process maps any more (the folio was partly unmapped) is
        freed here, as the kernel frees the unmapped tail of a split folio; with switch
        ``split_maps_zero_pages`` so is a zero-filled piece of a private mapping, whose
        page then maps the shared zero page. *freed*, when given, gets the number of
        pieces so freed (the kernel counts them migrated: freed under it). Returns (the
        pieces still mapped, folios that could not be split because they are pinned).
        """
        nodes = self.nodes
        parts = []
        zero_pages = self.kernel.split_maps_zero_pages and freed is not None
        with self.cond:
            # a pinned folio cannot split, nor (here) one shared copy-on-write
            pinned = (gather(nodes, f.src_node, f.src_pfn, "pins") > 0) | (
                gather(nodes, f.src_node, f.src_pfn, "cow") > 0
            )
            stuck, f = f[pinned], f[~pinned]
            for s, k, idx in groups(f.src_node, f.order):
                node = nodes[s]
                self.rmap.unqueue(s, f.src_pfn[idx])
                heads = node.split_folios(f.src_pfn[idx], k)
                target = np.repeat(f.dst_node[idx], 1 << k)
                live = self.rmap.mapped(node, heads)
                if zero_pages and node.kind == "dram":
                    live &= ~self.rmap.map_zero_page(node, heads[live], live)
                if not live.all():
                    dead = heads[~live]
                    node.state[dead] = 0
                    node.free_folios(dead, 0)
                    if freed is not None:
                        z = np.zeros(dead.size, np.int8)
                        freed.append(
                            Folios(np.full(dead.size, s, np.int32), dead, z, target[~live])
                        )
                    heads, target = heads[live], target[live]
                parts.append(
                    Folios(
                        np.full(heads.size, s, np.int32),
                        heads,
                        np.zeros(heads.size, np.int8),
                        target,
                    )
                )
            # as migrate_pages_batch's -ENOMEM case: a THP split to retry its pieces is
            # counted failed as well as split (nr_thp_failed, nr_thp_split)
            thps = _thps(f.order)
            self.vmstat.add("thp_migration_fail", thps)
            self.vmstat.add("thp_migration_split", thps)
            self.cond.notify_all()
        return Folios.concat(parts), stuck

    def split_partly_mapped(self, lists: MigrationLists) -> None:
        """Switch ``split_partly_mapped_thp`` (6.10): a large folio of ``from`` on the
        deferred split list is split now; its mapped pieces wait on ``split_folios``
        for the last pass, what the split freed counts migrated (the kernel finds those
        pieces freed under it). A folio that cannot split migrates whole."""
        f = lists.from_
        if f is None or not len(f) or not self.rmap.deferred:
            return
        big = np.flatnonzero(f.order > 1)  # nr_pages > 2, as the kernel's check
        if big.size == 0:
            return
        queued = np.zeros(len(f), dtype=bool)
        keys = self.rmap.deferred
        queued[big] = [(int(n), int(h)) in keys for n, h in zip(f.src_node[big], f.src_pfn[big])]
        if not queued.any():
            return
        freed: list[Folios] = []
        pieces, stuck = self.split(f[queued], freed)
        gone = Folios.concat(freed)
        with self.cond:
            self.vmstat.add("pgmigrate_success", len(gone))
        # their entries read as migrated (the status of a moved folio), as the kernel's
        lists.settle(gone, np.zeros(len(gone), dtype=np.int64))
        lists.split_folios.append(pieces)
        lists.from_ = Folios.concat([f[~queued], stuck])


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
        for s, idx in groups1(sn[sl]):
            for d, jdx in groups1(dn[sl][idx]):
                at = lo + idx[jdx]
                src = devmem.gather_words(batch.memory[s], sp[at])
                dst = devmem.gather_words(batch.memory[d], dp[at])
                page_bad[at] = (src != dst).any(axis=1)
    if not page_bad.any():
        return np.zeros(n, dtype=bool)
    starts = np.concatenate(([0], np.cumsum(npg)[:-1]))
    return np.logical_or.reduceat(page_bad, starts)


def _thps(order: np.ndarray) -> int:
    """How many of the folios of these orders are PMD-sized THPs (the vmstat thp_*)."""
    return int(np.count_nonzero(order == HPAGE_PMD_ORDER))


__all__ = ["EngineStats", "Folios", "MigrationEngine", "Outcome", "verify_batch"]
