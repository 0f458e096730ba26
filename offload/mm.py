"""Memory objects (what a mapping maps) and their page tables.

A private mapping owns one object; a shared mapping's object is mapped by every process
it was shared into, so remapping a folio updates every process at once (the kernel
reaches them through the rmap; here they share the table).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .constants import PAGE_SHIFT
from .errors import oserror
from .node import pages_of

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

#: ``MemObject.pfn`` values for pages without a frame.
PTE_NONE = -1  #: never touched
PTE_ZERO = -2  #: read before any write: the shared zero page


class MemObject:
    """The page table of one mapped region.

    Parameters
    ----------
    oid : int
        Object id (stored in the memmap of the folios it owns).
    npages : int
        Pages in the object.
    folio_order : int
        Order of the folios its faults allocate.
    home : int
        Node its faults allocate on.
    shared : bool
        Whether it can be mapped into several processes.
    """

    def __init__(self, oid: int, npages: int, folio_order: int, home: int, shared: bool) -> None:
        self.id = oid
        self.npages = npages
        self.folio_order = folio_order
        self.home = home
        self.shared = shared
        self.node = np.full(npages, -1, dtype=np.int32)
        self.pfn = np.full(npages, PTE_NONE, dtype=np.int64)
        #: mappings (VMAs) covering each page: a page lives while one covers it
        self.mapcount = np.zeros(npages, dtype=np.int32)
        #: shared objects: page table entries per page (processes that touched it); a
        #: page's mapcount for -EACCES, as the kernel counts PTEs
        self.ptes = np.zeros(npages, dtype=np.int32)

    @property
    def metadata_bytes(self) -> int:
        """Bytes of its page tables (node, pfn, mapcount and PTE count per page)."""
        return self.node.nbytes + self.pfn.nbytes + self.mapcount.nbytes + self.ptes.nbytes

    def set_folios(
        self, idx: np.ndarray, nid: int, heads: np.ndarray, order: int, nodes: Sequence[Node]
    ) -> None:
        """Map folios of one *order* at page indices *idx* (folio starts) to *heads*."""
        pages = pages_of(idx, order)
        self.node[pages] = nid
        self.pfn[pages] = pages_of(heads, order)
        node = nodes[nid]
        node.obj[heads] = self.id
        node.objidx[heads] = idx

    def repoint(
        self, first: int, n: int, src_node: int, src_head: int, dst_node: int, dst_head: int
    ) -> None:
        """Pages ``first .. first+n-1`` that map the folio at (*src_node*, *src_head*) map
        the same offsets of the folio at (*dst_node*, *dst_head*) instead (pages of the
        range mapped elsewhere, or not at all, are left alone)."""
        pages = np.arange(first, first + n)
        pfn = self.pfn[pages]
        mine = (self.node[pages] == src_node) & (pfn >= src_head) & (pfn < src_head + n)
        self.node[pages[mine]] = dst_node
        self.pfn[pages[mine]] = dst_head + (pfn[mine] - src_head)

    def fault_in(self, idx: np.ndarray, nodes: Sequence[Node], huge_zero: bool = False) -> None:
        """Allocate zeroed folios for the untouched pages among *idx* (write fault).

        A folio slot gets a folio of the object's order when no page of it was touched
        and every page of it is still mapped (a PMD fault needs the whole aligned range
        inside the mapping, ``thp_vma_suitable_order``); with *huge_zero* (kernels with
        switch ``huge_zero_write_thp``) also when the huge zero page maps it. The rest
        (and slots whose large allocation failed) get order-0 pages. All or nothing:
        on failure, everything this call allocated is freed and ENOMEM raised.
        """
        idx = np.unique(np.asarray(idx, dtype=np.int64))
        idx = idx[self.pfn[idx] < 0]
        if idx.size == 0:
            return
        node = nodes[self.home]
        done: list[tuple[np.ndarray, np.ndarray, int]] = []  # (obj idx, heads, order)
        small = idx
        k = self.folio_order
        if k > 0:
            slots = np.unique(idx >> k)
            span = pages_of(slots << k, k).reshape(slots.size, 1 << k)
            held = self.pfn[span]
            untouched = (held == PTE_NONE) | ((held == PTE_ZERO) if huge_zero else False)
            untouched = untouched.all(axis=1) & (self.mapcount[span] > 0).all(axis=1)
            big = slots[untouched] << k
            heads = node.alloc_folios(big.size, k, zero=True)
            if heads.size:
                done.append((big[: heads.size], heads, k))
            got = pages_of(big[: heads.size], k)
            small = idx[~np.isin(idx, got)]
        if small.size:
            heads = node.alloc_folios(small.size, 0, zero=True)
            if heads.size < small.size:
                node.free_folios(heads, 0)
                for _, h, o in done:
                    node.free_folios(h, o)
                raise oserror(
                    errno.ENOMEM, f"node {self.home} has no room for {small.size} more pages"
                )
            done.append((small, heads, 0))
        for oidx, heads, order in done:
            self.set_folios(oidx, self.home, heads, order, nodes)


@dataclass
class Vma:
    """A mapping of ``[start, end)`` in one process onto pages of a memory object.

    ``present`` (shared mappings only): per page of the mapping, whether this process
    has a page table entry for it, i.e. touched it since it mapped the region.
    """

    start: int
    end: int
    obj: MemObject
    pgoff: int
    folio_size: int
    present: np.ndarray | None = None

    def part(self, lo: int, hi: int) -> Vma:
        """The mapping of ``[lo, hi)``, a part of this one."""
        a, b = (lo - self.start) >> PAGE_SHIFT, (hi - self.start) >> PAGE_SHIFT
        return Vma(
            lo,
            hi,
            self.obj,
            self.pgoff + a,
            self.folio_size,
            None if self.present is None else self.present[a:b].copy(),
        )

    @property
    def shared(self) -> bool:
        return self.obj.shared

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT
