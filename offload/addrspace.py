"""A task's address space (the kernel's mm_struct): its mappings, the page-table walk,
faults, accesses and pins.

:class:`AddressSpace` keeps the VMA index (sorted arrays of starts, ends and page
offsets), maps and unmaps regions of memory objects, translates addresses to frames (the
page-table walk the syscalls use), and does what an access does: fault in, map the zero
page, break copy-on-write, wait while a folio is under migration. Who maps which folio
across address spaces (copy-on-write sharers, reaping, the deferred split queue) is the
reverse map's (:class:`~offload.rmap.Rmap`). Of its machine it uses only
:class:`~offload.host.MemoryHost`.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .arrays import as_run
from .constants import HPAGE_PMD_ORDER, MAX_FOLIO_ORDER, PAGE_SHIFT, PAGE_SIZE, TASK_SIZE
from .errors import BadArgument, BadArgumentType, check_int, check_node, oserror
from .mm import PTE_NONE, PTE_ZERO, MemObject, Vma
from .node import ISOLATED, MIGRATING, pages_of
from .uaccess import munmap_range, user_addr

if TYPE_CHECKING:  # pragma: no cover
    from .host import MemoryHost
    from .node import Node

_MMAP_BASE = 0x7F00_0000_0000
#: page table entries per page table (x86-64): fault-around never crosses one
PTRS_PER_PTE = 512
#: the kernel's fault_around_bytes: a read fault on shared memory maps the pages of the
#: aligned window around it that are already in memory (shared mappings are so aligned)
FAULT_AROUND_BYTES = 64 << 10


class Pin:
    """An extra reference on a folio (``get_user_pages``); a context manager.

    While held, the folio cannot migrate (``move_pages`` reports -EBUSY for it).
    """

    def __init__(self, host: MemoryHost, nid: int, head: int) -> None:
        self._m = host
        self.node = nid
        self.head = head
        self._held = True

    def release(self) -> None:
        """Drop the reference (idempotent)."""
        m = self._m
        with m.lock:
            if not self._held:
                return
            self._held = False
            node = m.nodes[self.node]
            node.pins[self.head] -= 1
            if node.pins[self.head] == 0 and node.obj[self.head] == -1:
                # unmapped while pinned: the last reference frees it
                node.free_folios(np.array([self.head]), int(node.order[self.head]))
            m.cond.notify_all()

    def __enter__(self) -> Pin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AddressSpace:
    """The mappings of one task and everything that walks them (``mm_struct``).

    Parameters
    ----------
    host : MemoryHost
        The nodes, the lock and the reverse map of the machine it lives on.
    """

    def __init__(self, host: MemoryHost) -> None:
        self.host = host
        self._vmas: list[Vma] = []
        self._next = _MMAP_BASE
        self._cap = 0
        self._buf_s = self._buf_e = self._buf_p = np.empty(0, dtype=np.int64)
        #: the mappings' starts, ends and page offsets, in address order: views of
        #: buffers with spare room, so that a new mapping is an append
        self._reindex()

    def __len__(self) -> int:
        return len(self._vmas)

    @property
    def mappings(self) -> list[tuple[int, int, bool, int]]:
        """(start, length, shared, folio_size) of every mapping, by address."""
        return [(v.start, v.end - v.start, v.shared, v.folio_size) for v in self._vmas]

    # -- mappings -----------------------------------------------------------------------
    def _insert_vma(self, vma: Vma) -> None:
        """Add a mapping. New mappings are placed above the others, so this is an append
        to arrays with spare room (O(1)); anything else re-sorts."""
        n = len(self._vmas)
        if n and vma.start < self._vmas[-1].end:
            self._vmas.append(vma)
            self._vmas.sort(key=lambda v: v.start)
            self._reindex()
            return
        self._reserve(n + 1)
        self._vmas.append(vma)
        self._buf_s[n], self._buf_e[n], self._buf_p[n] = vma.start, vma.end, vma.pgoff
        self._views(n + 1)

    def _reserve(self, need: int) -> None:
        """Room for *need* entries in the index buffers (doubling, so appends are O(1))."""
        if need <= self._cap:
            return
        n = len(self._vmas)
        self._cap = max(16, 2 * need)
        for name in ("_buf_s", "_buf_e", "_buf_p"):
            grown = np.empty(self._cap, dtype=np.int64)
            grown[:n] = getattr(self, name)[:n]
            setattr(self, name, grown)

    def _views(self, n: int) -> None:
        self._starts, self._ends, self._pgoffs = self._buf_s[:n], self._buf_e[:n], self._buf_p[:n]

    def _reindex(self) -> None:
        """Rebuild the address index from the list of mappings."""
        n = len(self._vmas)
        self._cap = max(16, n)
        self._buf_s = np.zeros(self._cap, dtype=np.int64)
        self._buf_e = np.zeros(self._cap, dtype=np.int64)
        self._buf_p = np.zeros(self._cap, dtype=np.int64)
        self._buf_s[:n] = [v.start for v in self._vmas]
        self._buf_e[:n] = [v.end for v in self._vmas]
        self._buf_p[:n] = [v.pgoff for v in self._vmas]
        self._views(n)

    def _splice(self, i0: int, i1: int, parts: list[Vma]) -> None:
        """Replace mappings ``i0 .. i1-1`` by *parts* (in address order), index too: the
        entries above shift in place (a memmove), the buffers grow when full."""
        n = len(self._vmas)
        m = n - (i1 - i0) + len(parts)
        self._reserve(m)
        self._vmas[i0:i1] = parts
        j = i0 + len(parts)
        for name, attr in (("_buf_s", "start"), ("_buf_e", "end"), ("_buf_p", "pgoff")):
            buf = getattr(self, name)
            if j != i1:
                buf[j:m] = buf[i1:n].copy() if j > i1 else buf[i1:n]
            buf[i0:j] = [getattr(v, attr) for v in parts]
        self._views(m)

    def _place(self, length: int, align: int) -> int:
        """An address for a new mapping of *length* bytes; ENOMEM when the user address
        space has no room left for it (as get_unmapped_area)."""
        start = -(-self._next // align) * align
        if start + length > TASK_SIZE:
            raise oserror(
                errno.ENOMEM, f"no room for {length} bytes below {TASK_SIZE:#x} (TASK_SIZE)"
            )
        self._next = start + length + PAGE_SIZE  # a guard page between mappings
        return start

    def mmap(
        self,
        length: int,
        node: int = 0,
        folio_size: int = PAGE_SIZE,
        shared: bool = False,
        populate: bool = True,
    ) -> int:
        """Map *length* bytes of anonymous memory; return its address.

        Parameters
        ----------
        length : int
            Bytes; a positive multiple of *folio_size*.
        node : int
            Node the folios are allocated on.
        folio_size : int
            4 KiB .. 2 MiB, a power of two: the folio size faults allocate.
        shared : bool
            MAP_SHARED (can be mapped into other processes with :meth:`share`).
        populate : bool
            Allocate and zero every folio now (MAP_POPULATE); else on first write.

        Raises
        ------
        BadArgument, BadArgumentType
            Naming the bad argument; nothing is allocated.
        OSError
            ENOMEM if *populate* and the node has no room.
        """
        folio_size = check_int(folio_size, "folio_size", minimum=PAGE_SIZE)
        order = folio_size.bit_length() - 1 - PAGE_SHIFT
        if folio_size & (folio_size - 1) or order > MAX_FOLIO_ORDER:
            raise BadArgument(f"folio_size: must be a power of two from 4K to 2M, got {folio_size}")
        length = check_int(length, "length", minimum=1, multiple=folio_size)
        nid = check_node(node, "node", len(self.host.nodes))
        if not isinstance(shared, bool) or not isinstance(populate, bool):
            raise BadArgumentType("shared/populate: expected bool")
        m = self.host
        capacity = sum(n.nr_pages for n in m.nodes) << PAGE_SHIFT
        if length > capacity:  # the kernel's overcommit check refuses it as well
            raise oserror(
                errno.ENOMEM,
                f"length {length} is more than the machine's {capacity} bytes of memory",
            )
        with m.lock:
            if populate and (length >> PAGE_SHIFT) > m.nodes[nid].free_pages:
                raise oserror(
                    errno.ENOMEM,
                    f"node {nid} has {m.nodes[nid].free_pages} free "
                    f"pages, {length >> PAGE_SHIFT} asked for",
                )
            start = self._place(
                length, max(folio_size, FAULT_AROUND_BYTES) if shared else folio_size
            )
            obj = MemObject(m.rmap.next_id(), length >> PAGE_SHIFT, order, nid, shared)
            obj.mapcount[:] = 1
            if populate:
                obj.fault_in(np.arange(obj.npages), m.nodes)
            present = None
            if shared:  # populated: this process has a page table entry for every page
                present = np.full(obj.npages, populate, dtype=bool)
                obj.ptes[:] = int(populate)
            m.rmap.objects[obj.id] = obj
            self._insert_vma(Vma(start, start + length, obj, 0, folio_size, present))
        return start

    def share(self, addr: int, length: int, into: AddressSpace) -> int:
        """Map the shared region ``[addr, addr + length)`` into process *into*.

        Returns the address in *into*. The region must lie inside one shared mapping.
        """
        addr = user_addr(addr)
        if addr % PAGE_SIZE:
            raise BadArgument(f"addr: must be a multiple of {PAGE_SIZE}, got {addr}")
        length = check_int(length, "length", minimum=1, multiple=PAGE_SIZE)
        if not isinstance(into, AddressSpace) or into.host is not self.host:
            raise BadArgumentType("into: expected an address space of the same machine")
        m = self.host
        with m.lock:
            vma = self._vma_at(addr)
            if vma is None or addr + length > vma.end:
                raise oserror(errno.EFAULT, f"[{addr:#x}, +{length:#x}) is not inside one mapping")
            if not vma.shared:
                raise oserror(
                    errno.EINVAL,
                    f"{addr:#x} is a private mapping; only shared "
                    "mappings (mmap(shared=True)) can be shared",
                )
            pgoff = vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT)
            if pgoff % (vma.folio_size >> PAGE_SHIFT) or length % vma.folio_size:
                raise BadArgument(f"addr/length: must cover whole folios of {vma.folio_size} bytes")
            start = into._place(length, max(vma.folio_size, FAULT_AROUND_BYTES))
            vma.obj.mapcount[pgoff : pgoff + (length >> PAGE_SHIFT)] += 1
            # no page table entry until *into* touches a page: until then the page does
            # not count towards its mapcount (it can move with MPOL_MF_MOVE)
            into._insert_vma(
                Vma(
                    start,
                    start + length,
                    vma.obj,
                    pgoff,
                    vma.folio_size,
                    np.zeros(length >> PAGE_SHIFT, dtype=bool),
                )
            )
        return start

    def munmap(self, addr: int, length: int) -> None:
        """Unmap ``[addr, addr + length)``; free the folios no mapping uses any more.

        As munmap(2): *length* is rounded up to whole pages, and a range with no
        mapping in it is no error. Folios under migration are waited for; a pinned
        folio is freed at unpin.

        Raises
        ------
        BadRange
            EINVAL (an ``OSError`` and a :class:`BadArgument`) for an unaligned *addr*,
            a zero or negative *length*, or a range past the end of the user address
            space (``TASK_SIZE``); nothing is unmapped.
        """
        addr, end = munmap_range(addr, length)
        m = self.host
        with m.lock:
            while True:
                # the mappings that overlap the range, found by binary search
                i0 = int(np.searchsorted(self._ends, addr, side="right"))
                i1 = int(np.searchsorted(self._starts, end, side="left"))
                ranges = [(v, max(v.start, addr), min(v.end, end)) for v in self._vmas[i0:i1]]
                busy = False
                for v, lo, hi in ranges:
                    idx = self._obj_pages(v, lo, hi)
                    if _folio_state(m.nodes, v.obj, idx) & (ISOLATED | MIGRATING):
                        busy = True
                        break
                if not busy:
                    break
                m.cond.wait()
            keep = []
            for v, lo, hi in ranges:
                idx = self._obj_pages(v, lo, hi)
                if v.present is not None:
                    a = (lo - v.start) >> PAGE_SHIFT
                    v.obj.ptes[idx] -= v.present[a : a + idx.size]
                m.rmap.unmap_pages(m.nodes, v.obj, idx)
                if v.start < lo:
                    keep.append(v.part(v.start, lo))
                if hi < v.end:
                    keep.append(v.part(hi, v.end))
                if not (v.obj.mapcount > 0).any():
                    m.rmap.objects.pop(v.obj.id, None)
            if ranges:
                self._splice(i0, i1, keep)
            m.cond.notify_all()

    @staticmethod
    def _obj_pages(v: Vma, lo: int, hi: int) -> np.ndarray:
        first = v.pgoff + ((lo - v.start) >> PAGE_SHIFT)
        return np.arange(first, first + ((hi - lo) >> PAGE_SHIFT), dtype=np.int64)

    def _vma_at(self, addr: int) -> Vma | None:
        i = int(np.searchsorted(self._starts, addr, side="right")) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._vmas[i]
        return None

    # -- translation --------------------------------------------------------------------
    def _translate(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """VMA index (-1: unmapped) and object page index of each address."""
        if addrs.size and self._starts.size:
            lo, hi = int(addrs.min()), int(addrs.max())
            v = int(np.searchsorted(self._starts, lo, side="right")) - 1
            if v >= 0 and hi < self._ends[v]:  # all in one mapping: no search per entry
                idx = addrs - self._starts[v]  # one array, the rest in place
                idx >>= PAGE_SHIFT
                idx += self._pgoffs[v]
                return np.full(addrs.size, v, dtype=np.int64), idx
        i = np.searchsorted(self._starts, addrs, side="right") - 1
        ok = i >= 0
        ok[ok] = addrs[ok] < self._ends[i[ok]]
        vi = np.where(ok, i, -1)
        j = np.where(ok, i, 0)
        if self._starts.size == 0:
            return vi, np.zeros(addrs.size, dtype=np.int64)
        idx = ((addrs - self._starts[j]) >> PAGE_SHIFT) + self._pgoffs[j]
        return vi, idx

    def _ptes(
        self, vi: np.ndarray, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per entry: object id, node, pfn (PTE_NONE/PTE_ZERO/-3 unmapped), mapcount.

        The mapcount counts page table entries, as the kernel's does: for a shared
        mapping, the processes that touched the page; for a private one, the processes
        sharing the folio copy-on-write since a fork. A page of a shared mapping that
        this process never touched has no entry here (PTE_NONE).
        """
        n = vi.size
        lo, hi = (int(vi.min()), int(vi.max())) if n else (-1, -1)
        if lo == hi >= 0 and self._vmas[lo].present is None:
            # every entry in one private mapping (a region moved whole): one gather each
            obj = self._vmas[lo].obj
            oid = np.full(n, obj.id, dtype=np.int64)
            at = as_run(idx)
            if at is not None:  # consecutive pages: copies of slices
                nid, pfn, mc = obj.node[at].copy(), obj.pfn[at].copy(), obj.mapcount[at].copy()
            else:
                nid, pfn, mc = obj.node[idx], obj.pfn[idx], obj.mapcount[idx]
            return self._with_cow(oid, nid, pfn, mc)
        oid = np.full(n, -1, dtype=np.int64)
        nid = np.full(n, -1, dtype=np.int32)
        pfn = np.full(n, -3, dtype=np.int64)
        mc = np.zeros(n, dtype=np.int32)
        if n == 0:
            return oid, nid, pfn, mc
        groups = [(lo, slice(None))] if lo == hi else [(int(v), vi == v) for v in np.unique(vi)]
        for v, sel in groups:
            if v < 0:
                continue
            vma = self._vmas[v]
            obj = vma.obj
            ix = idx[sel]
            oid[sel] = obj.id
            nid[sel] = obj.node[ix]
            pfn[sel] = obj.pfn[ix]
            if vma.present is not None:
                mc[sel] = obj.ptes[ix]
                absent = ~vma.present[ix - vma.pgoff]
                if absent.any():
                    where = np.flatnonzero(sel) if not isinstance(sel, slice) else np.arange(n)
                    nid[where[absent]] = -1
                    pfn[where[absent]] = PTE_NONE
            else:
                mc[sel] = obj.mapcount[ix]
        return self._with_cow(oid, nid, pfn, mc)

    def _with_cow(
        self, oid: np.ndarray, nid: np.ndarray, pfn: np.ndarray, mc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_ptes`' entries, the mapcounts counting the processes that share a
        private folio copy-on-write since a fork."""
        if not self.host.rmap.cow:
            return oid, nid, pfn, mc
        present = pfn >= 0
        if present.any():
            # private folios shared copy-on-write after a fork
            per_folio = self.host.kernel.shared_per_folio
            for s in np.unique(nid[present]):
                at = present & (nid == s)
                node = self.host.nodes[int(s)]
                mc[at] += self.host.rmap.cow_mapcount(node, pfn[at], oid[at], per_folio)
        return oid, nid, pfn, mc

    def _span(self, addr: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Translate every page of ``[addr, addr + n)``; EFAULT if any is unmapped.

        The range is checked against the mappings first, so that an absurd length
        fails with EFAULT before any per-page array is built.
        """
        self._check_mapped(addr, n)
        first = addr >> PAGE_SHIFT
        last = (addr + n - 1) >> PAGE_SHIFT
        pages = np.arange(first, last + 1, dtype=np.int64) << PAGE_SHIFT
        vi, idx = self._translate(pages)
        if (vi < 0).any():
            bad = int(pages[np.argmax(vi < 0)])
            raise oserror(errno.EFAULT, f"address {max(bad, addr):#x} is not mapped")
        return vi, idx

    def _check_mapped(self, addr: int, n: int) -> None:
        """EFAULT unless mappings cover ``[addr, addr + n)`` without a hole."""
        i = int(np.searchsorted(self._starts, addr, side="right")) - 1
        end = addr + n
        at = addr
        while i >= 0 and i < self._starts.size and self._starts[i] <= at < self._ends[i]:
            at = int(self._ends[i])
            if at >= end:
                return
            i += 1
        raise oserror(errno.EFAULT, f"address {at:#x} is not mapped")

    def _wait_stable(
        self, addr: int, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Translate the span, waiting while any of its folios is under migration."""
        m = self.host
        while True:
            vi, idx = self._span(addr, n)
            oid, nid, pfn, _mc = self._ptes(vi, idx)
            present = pfn >= 0
            if (
                not present.any()
                or not (_states(m.nodes, nid[present], pfn[present]) & MIGRATING).any()
            ):
                return vi, idx, oid, nid, pfn
            m.cond.wait()

    def _fault_shared(self, vi: np.ndarray, idx: np.ndarray, write: bool = False) -> bool:
        """Accesses through shared mappings: a page nobody has is allocated (shmem has no
        zero page), and this process gets page table entries for it; a read fault also
        maps the pages around it that are already in memory, in the aligned 64 KiB
        window (the kernel's fault-around). Returns whether any entry is new."""
        changed = False
        for v in np.unique(vi):
            vma = self._vmas[int(v)]
            if vma.present is None:
                continue
            ix = idx[vi == v]
            rel = ix - vma.pgoff
            if vma.present[rel].all():
                continue
            obj = vma.obj
            try:
                obj.fault_in(ix[~vma.present[rel]], self.host.nodes)
            except OSError:
                if write:
                    raise
                # no memory for a page nobody has yet: this read sees zeros and maps
                # nothing (the kernel would fail the fault)
                rel = rel[obj.pfn[ix] >= 0]
            touched = rel
            if not write:
                # do_fault_around: the window starts at the fault's address aligned down
                # to fault_around_bytes, or at the mapping's start if that is later, and
                # runs for fault_around_bytes, clamped to the mapping and to the page
                # table (a 2 MiB-aligned range)
                win = FAULT_AROUND_BYTES >> PAGE_SHIFT
                base = vma.start >> PAGE_SHIFT
                v = rel[~vma.present[rel]] + base
                first = np.maximum((v // win) * win, base)
                table_end = (first // PTRS_PER_PTE + 1) * PTRS_PER_PTE
                last = np.minimum(np.minimum(first + win, table_end), base + vma.npages)
                around = (first[:, None] + np.arange(win)).ravel()
                inside = around < np.repeat(last, win)
                around = np.unique(around[inside]) - base
                around = around[obj.pfn[around + vma.pgoff] >= 0]
                touched = np.union1d(rel, around)
            new = touched[~vma.present[touched]]
            vma.present[new] = True
            np.add.at(obj.ptes, new + vma.pgoff, 1)
            changed = changed or bool(new.size)
        return changed

    def _break_cow(self, vi: np.ndarray, idx: np.ndarray) -> bool:
        """A write to private pages whose folio is shared copy-on-write since a fork:
        this process gets its own copy. Returns whether any folio was copied."""
        m = self.host
        copied = False
        for v in np.unique(vi):
            vma = self._vmas[int(v)]
            if vma.present is not None:
                continue
            obj = vma.obj
            ix = idx[vi == v]
            pf, nd = obj.pfn[ix], obj.node[ix]
            ok = pf >= 0
            for s in np.unique(nd[ok]):
                node = m.nodes[int(s)]
                on = ok & (nd == s)
                pheads = node.head_of(pf[on])
                heads = np.unique(pheads)
                for h in heads[node.cow[heads] > 0].tolist():  # few: only after a fork
                    if node.order[h]:
                        m.rmap.cow_copy_pages(
                            m.nodes, m.memory, obj, int(s), h, np.unique(ix[on][pheads == h])
                        )
                    else:
                        m.rmap.cow_copy(m.nodes, m.memory, obj, int(s), h)
                    copied = True
        return copied

    def dup(self) -> AddressSpace:
        """A copy of every mapping for a fork child (``dup_mmap``). The caller holds the
        lock.

        Private pages are shared copy-on-write; shared mappings are shared, with no page
        table entry in the child until it touches a page, as fork(2) copies none for
        shared memory.
        """
        m = self.host
        copies: dict[int, MemObject] = {}
        vmas = []
        for v in self._vmas:
            obj = v.obj
            rng = slice(v.pgoff, v.pgoff + v.npages)
            if v.present is not None:
                obj.mapcount[rng] += 1
                vmas.append(
                    Vma(v.start, v.end, obj, v.pgoff, v.folio_size, np.zeros(v.npages, dtype=bool))
                )
                continue
            c = copies.get(obj.id)
            if c is None:
                c = copies[obj.id] = m.rmap.clone_cow(m.nodes, obj)
            c.mapcount[rng] += 1
            vmas.append(Vma(v.start, v.end, c, v.pgoff, v.folio_size))
        child = AddressSpace(m)
        child._vmas = vmas
        child._next = self._next
        child._reindex()
        return child

    # -- accesses -----------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        """Read *n* bytes at *addr*. Untouched pages read as zeros (the zero page)."""
        return self.read_array(addr, n).tobytes()

    def read_array(self, addr: int, n: int) -> np.ndarray:
        """Like :meth:`read`, as a new uint8 numpy array."""
        addr = user_addr(addr)
        n = check_int(n, "n", minimum=0)
        if n == 0:
            return np.empty(0, dtype=np.uint8)
        m = self.host
        with m.lock:
            vi, idx, _oid, nid, pfn = self._wait_stable(addr, n)
            if self._fault_shared(vi, idx):
                _oid, nid, pfn, _ = self._ptes(vi, idx)
            out = np.empty((pfn.size, PAGE_SIZE), dtype=np.uint8)
            present = pfn >= 0
            node0 = m.nodes[int(nid[0])] if nid.size else None
            if (
                node0 is not None
                and present.all()
                and nid.min() == nid.max()
                and node0.kind == "dram"
            ):
                np.take(node0.frames, pfn, axis=0, out=out, mode="clip")
            else:
                out[~present] = 0
                for s in np.unique(nid[present]):
                    sel = (nid == s) & present
                    out[sel] = m.nodes[int(s)].read_pages(pfn[sel])
            none = pfn == PTE_NONE
            if none.any():
                for v in np.unique(vi[none]):
                    vma = self._vmas[int(v)]
                    _map_zero_page(vma.obj, idx[none & (vi == v)])
        off = addr & (PAGE_SIZE - 1)
        flat = out.reshape(-1)
        return flat[off : off + n] if off or n != flat.size else flat

    def write(self, addr: int, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Write *data* at *addr*, allocating folios on first touch."""
        addr = user_addr(addr)
        if isinstance(data, np.ndarray):
            if data.dtype.hasobject:
                raise BadArgumentType(
                    f"data: a numpy array of Python objects (dtype "
                    f"{data.dtype}) has no bytes to write"
                )
            buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            try:
                buf = np.frombuffer(data, dtype=np.uint8)
            except (TypeError, ValueError, BufferError) as exc:
                raise BadArgument(f"data: not a contiguous buffer of bytes ({exc})") from None
        else:
            raise BadArgumentType(
                f"data: expected bytes-like or a numpy array, got {type(data).__name__}"
            )
        n = buf.size
        if n == 0:
            return
        m = self.host
        with m.lock:
            vi, idx, _oid, nid, pfn = self._wait_stable(addr, n)
            missing = pfn < 0
            if missing.any():
                for v in np.unique(vi[missing]):
                    obj = self._vmas[int(v)].obj
                    obj.fault_in(idx[missing & (vi == v)], m.nodes, m.kernel.huge_zero_write_thp)
            changed = self._fault_shared(vi, idx, write=True) | self._break_cow(vi, idx)
            if missing.any() or changed:
                _oid, nid, pfn, _ = self._ptes(vi, idx)
            _scatter(m.nodes, nid, pfn, addr & (PAGE_SIZE - 1), buf)

    def pin(self, addr: int) -> Pin:
        """Take an extra reference on the folio at *addr* (faulting it in if needed)."""
        addr = user_addr(addr)
        m = self.host
        with m.lock:
            vi, idx, _oid, nid, pfn = self._wait_stable(addr, 1)
            if pfn[0] < 0:
                self._vmas[int(vi[0])].obj.fault_in(idx[:1], m.nodes)
            if self._fault_shared(vi, idx) or pfn[0] < 0:
                _oid, nid, pfn, _ = self._ptes(vi, idx)
            node = m.nodes[int(nid[0])]
            head = int(node.head_of(pfn[:1])[0])
            node.pins[head] += 1
            return Pin(m, node.id, head)

    # -- page table walks for the syscalls --------------------------------------------------
    def follow_pages(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The page table entry of each address (the kernel's ``follow_page``).

        Returns (node, pfn, mapcount) per address. The pfn is a frame (>= 0), or
        ``PTE_NONE`` (-1: no page there yet), ``PTE_ZERO`` (-2: the zero page) or -3
        (no mapping). The caller holds the machine lock.
        """
        vi, idx = self._translate(addrs)
        _, nid, pfn, mapcount = self._ptes(vi, idx)
        return nid, pfn, mapcount

    def follow_page(self, addr: int) -> tuple[int, int, int]:
        """:meth:`follow_pages` of one address, in scalars (a one-page move_pages)."""
        v = self._vma_at(addr) if addr >= 0 else None
        if v is None:
            return -1, -3, 0
        obj = v.obj
        ix = v.pgoff + ((addr - v.start) >> PAGE_SHIFT)
        if v.present is not None:
            mapcount = int(obj.ptes[ix])
            if not v.present[ix - v.pgoff]:
                return -1, PTE_NONE, mapcount
        else:
            mapcount = int(obj.mapcount[ix])
        nid, pfn = int(obj.node[ix]), int(obj.pfn[ix])
        if pfn >= 0 and self.host.rmap.cow:
            node = self.host.nodes[nid]
            mapcount += int(
                self.host.rmap.cow_mapcount(
                    node, np.array([pfn]), np.array([obj.id]), self.host.kernel.shared_per_folio
                )[0]
            )
        return nid, pfn, mapcount

    def shared_at(self, addrs: np.ndarray) -> np.ndarray:
        """Per address: whether a shared mapping (MAP_SHARED) holds it."""
        vi, _ = self._translate(addrs)
        shared = np.array([v.shared for v in self._vmas] + [False], dtype=bool)
        return shared[vi]

    def queue_pages(self, node: int, shared: bool) -> np.ndarray:
        """The frames of node *node* that this process maps, in address order (the
        kernel's ``queue_pages_range``); pages mapped by other processes too only if
        *shared*. The caller holds the machine lock."""
        out = []
        for i, v in enumerate(self._vmas):
            idx = np.arange(v.pgoff, v.pgoff + v.npages, dtype=np.int64)
            _, nid, pfn, mapcount = self._ptes(np.full(idx.size, i), idx)
            on = (nid == node) & (pfn >= 0)
            if not shared:
                on &= mapcount <= 1  # shared folios are skipped, not failed
            out.append(pfn[on])
        return np.concatenate(out) if out else np.empty(0, np.int64)


def _map_zero_page(obj: MemObject, idx: np.ndarray) -> None:
    """A read fault on never-touched pages *idx*: map the shared zero page.

    In a THP mapping, a read of a 2 MiB slot with nothing in it maps the huge zero page
    over the whole slot (do_huge_pmd_anonymous_page): every page of it reads as zeros
    and queries as -EFAULT. Elsewhere, the 4 KiB zero page for each page read.
    """
    obj.pfn[idx] = PTE_ZERO
    if obj.folio_order != HPAGE_PMD_ORDER:
        return
    slots = np.unique(idx >> HPAGE_PMD_ORDER)
    span = pages_of(slots << HPAGE_PMD_ORDER, HPAGE_PMD_ORDER).reshape(slots.size, -1)
    span = span[span[:, -1] < obj.npages]
    empty = np.isin(obj.pfn[span], (PTE_NONE, PTE_ZERO)).all(axis=1)
    obj.pfn[span[empty].ravel()] = PTE_ZERO


def _states(nodes: Sequence[Node], nid: np.ndarray, pfn: np.ndarray) -> np.ndarray:
    out = np.zeros(nid.size, dtype=np.uint8)
    for s in np.unique(nid):
        sel = nid == s
        node = nodes[int(s)]
        out[sel] = node.state[node.head_of(pfn[sel])]
    return out


def _folio_state(nodes: Sequence[Node], obj: MemObject, idx: np.ndarray) -> int:
    """OR of the state bits of the folios backing object pages *idx*."""
    present = obj.pfn[idx] >= 0
    if not present.any():
        return 0
    return int(np.bitwise_or.reduce(_states(nodes, obj.node[idx][present], obj.pfn[idx][present])))


def _scatter(
    nodes: Sequence[Node], nid: np.ndarray, pfn: np.ndarray, off: int, buf: np.ndarray
) -> None:
    """Write *buf* starting at byte *off* of the first of the pages (nid, pfn)."""
    k = pfn.size
    n = buf.size
    if k == 1:
        nodes[int(nid[0])].write_bytes(int(pfn[0]), off, buf[:n])
        return
    head = PAGE_SIZE - off
    nodes[int(nid[0])].write_bytes(int(pfn[0]), off, buf[:head])
    mid = k - 2
    if mid:
        body = buf[head : head + mid * PAGE_SIZE].reshape(mid, PAGE_SIZE)
        mn, mp = nid[1:-1], pfn[1:-1]
        if mn[0] == mn[-1] and (mn == mn[0]).all():  # one node: no copy of the data
            nodes[int(mn[0])].write_pages(mp, body)
        else:
            for s in np.unique(mn):
                sel = mn == s
                nodes[int(s)].write_pages(mp[sel], body[sel])
    tail = buf[head + mid * PAGE_SIZE :]
    nodes[int(nid[-1])].write_bytes(int(pfn[-1]), 0, tail)


__all__ = ["FAULT_AROUND_BYTES", "AddressSpace", "Pin"]
