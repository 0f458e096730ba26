"""Memory nodes: page frames, the buddy allocator and the per-page metadata (memmap)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import devmem
from .arrays import aligned_rows
from .buddy import BuddyAllocator
from .constants import MAX_FOLIO_ORDER, PAGE_SIZE

NODE_KINDS = ("dram", "device")

#: memmap ``state`` bits, kept at a folio's head page.
ISOLATED = 1  #: taken by a migration (off the LRU in the kernel)
MIGRATING = 2  #: mapped through migration entries: accesses wait


class Node:
    """One memory node: its frames and the metadata of every page frame.

    Parameters
    ----------
    nid : int
        Node id.
    nr_pages : int
        Number of 4 KiB frames.
    kind : str
        ``"dram"`` or ``"device"``.
    frames : numpy.ndarray, optional
        Backing store of shape ``(nr_pages, PAGE_SIZE)``, uint8; allocated if omitted.
    layout, seed : str, int
        How its free memory starts (see :class:`~offload.buddy.BuddyAllocator`).

    Attributes
    ----------
    frames : numpy.ndarray
        The node's memory, one row per page frame.
    order : numpy.ndarray
        Per page: the order of the folio that holds it, or -1 when free.
    pins, obj, objidx, state : numpy.ndarray
        Per folio head: extra references (pins), the owning memory object id (-1 none)
        and the page index of the head in it, migration state bits.
    """

    def __init__(
        self,
        nid: int,
        nr_pages: int,
        kind: str = "dram",
        frames: np.ndarray | None = None,
        layout: str = "fresh",
        seed: int = 0,
    ) -> None:
        self.id = int(nid)
        self.kind = kind
        self.nr_pages = int(nr_pages)
        if frames is None:
            frames = devmem.allocate(kind, self.nr_pages, PAGE_SIZE)
        self.frames = frames
        self.buddy = BuddyAllocator(self.nr_pages, MAX_FOLIO_ORDER, layout, seed)
        self.order = np.full(self.nr_pages, -1, dtype=np.int8)
        self.pins = np.zeros(self.nr_pages, dtype=np.int32)
        self.obj = np.full(self.nr_pages, -1, dtype=np.int32)
        self.objidx = np.zeros(self.nr_pages, dtype=np.int64)
        self.state = np.zeros(self.nr_pages, dtype=np.uint8)
        #: per folio head: private mappings beyond the first (copy-on-write after fork);
        #: the reverse map's ``cow`` lists them
        self.cow = np.zeros(self.nr_pages, dtype=np.int16)
        #: fault injection: the next this-many migration allocations here fail (ENOMEM)
        self.fail_allocs = 0
        #: called when an allocation falls short; returns whether it freed memory (the
        #: machine splits folios queued for deferred split there)
        #: called when an allocation falls short: frees memory, says whether it did
        self.reclaim: Callable[[], bool] | None = None

    @property
    def free_pages(self) -> int:
        """Number of free base pages."""
        return self.buddy.free_pages

    @property
    def size(self) -> int:
        """Bytes of memory on the node."""
        return self.nr_pages * PAGE_SIZE

    @property
    def metadata_bytes(self) -> int:
        """Bytes of per-frame metadata (the struct pages) and of the buddy allocator."""
        arrays = (self.order, self.pins, self.obj, self.objidx, self.state, self.cow)
        return sum(a.nbytes for a in arrays) + self.buddy.metadata_bytes

    def __repr__(self) -> str:
        return (
            f"Node(id={self.id}, kind={self.kind!r}, nr_pages={self.nr_pages}, "
            f"free_pages={self.free_pages})"
        )

    # -- folio allocation -------------------------------------------------------------
    def alloc_folios(self, n: int, order: int, zero: bool = False) -> np.ndarray:
        """Allocate up to *n* folios of *order*; return their head pfns.

        The memmap marks them in use; they have no owner, no pins, no sharers and no
        state, as every free frame (freeing clears them; :meth:`Machine.audit` checks
        it), so nothing is written for them here.
        """
        if n == 1:  # in scalars (the buddy hands out the block alloc(1, order) would)
            h = self.alloc_folio(order, zero)
            return np.array([h], dtype=np.int64) if h >= 0 else np.empty(0, dtype=np.int64)
        heads = self.buddy.alloc(n, order)
        if heads.size < n and self.reclaim is not None and self.reclaim():
            more = self.buddy.alloc(n - heads.size, order)
            heads = np.concatenate((heads, more)) if heads.size else more
        if heads.size == 1:  # one folio: slices and scalars, no index arrays
            self._mark_used(int(heads[0]), order, zero)
        elif heads.size:
            fill_folios(self.order, heads, order, order)
            if zero:
                devmem.zero(self.frames, pages_of(heads, order))
        return heads

    def alloc_folio(self, order: int, zero: bool = False) -> int:
        """Allocate one folio of *order*; return its head pfn, or -1 when none is free."""
        h = self.buddy.alloc_one(order)
        if h < 0 and self.reclaim is not None and self.reclaim():
            h = self.buddy.alloc_one(order)
        if h >= 0:
            self._mark_used(h, order, zero)
        return h

    def _mark_used(self, h: int, order: int, zero: bool) -> None:
        self.order[h : h + (1 << order)] = order
        if zero:
            devmem.zero(self.frames, np.arange(h, h + (1 << order)))

    def free_folio(self, h: int, order: int) -> None:
        """Free the folio of *order* at head pfn *h*."""
        self.order[h : h + (1 << order)] = -1
        self.obj[h] = -1
        self.state[h] = self.pins[h] = self.cow[h] = 0
        self.buddy.free_one(h, order)

    def free_folios(self, heads: np.ndarray, orders: np.ndarray | int) -> None:
        """Free folios given by head pfn and order (scalar or per folio)."""
        heads = np.asarray(heads, dtype=np.int64)
        if heads.size <= 1:
            if heads.size:  # one folio: slices and scalars
                self.free_folio(int(heads[0]), int(np.asarray(orders).flat[0]))
            return
        orders = np.asarray(orders)
        if orders.ndim == 0 or orders.min() == orders.max():
            groups = [(int(orders.flat[0]), heads)]
        else:
            groups = [(int(k), heads[orders == k]) for k in np.unique(orders)]
        for k, h in groups:
            fill_folios(self.order, h, k, -1)
            self.obj[h] = -1
            self.state[h] = 0
            self.pins[h] = 0
            self.cow[h] = 0
            self.buddy.free(h, k)

    def read_pages(self, pfns: np.ndarray) -> np.ndarray:
        """Rows *pfns* as a new host array (from GPU memory for a device node)."""
        return devmem.gather(self.frames, pfns)

    def write_pages(self, pfns: np.ndarray, rows: np.ndarray) -> None:
        """Write host *rows* into pages *pfns*."""
        devmem.scatter(self.frames, pfns, rows)

    def write_bytes(self, pfn: int, off: int, buf: np.ndarray) -> None:
        """Write *buf* at byte *off* of page *pfn*."""
        devmem.write_partial(self.frames, pfn, off, buf)

    def head_of(self, pfn: np.ndarray) -> np.ndarray:
        """Head pfn of the folio holding each page (pages must be allocated)."""
        pfn = np.asarray(pfn, dtype=np.int64)
        return heads_at(pfn, self.order[pfn])

    def split_folios(self, heads: np.ndarray, order: int) -> np.ndarray:
        """Split folios of *order* into order-0 folios; return every new head pfn.

        Each piece keeps the owner (its own page index in it), the state bits and no pins.
        """
        heads = np.asarray(heads, dtype=np.int64)
        npages = 1 << order
        pages = pages_of(heads, order)
        offs = np.tile(np.arange(npages, dtype=np.int64), heads.size)
        self.order[pages] = 0
        self.obj[pages] = np.repeat(self.obj[heads], npages)
        self.objidx[pages] = np.repeat(self.objidx[heads], npages) + offs
        self.state[pages] = np.repeat(self.state[heads], npages)
        self.pins[pages] = 0
        return pages


def fill_folios(a: np.ndarray, heads: np.ndarray, order: int, value: int) -> None:
    """Set every page of the folios of *order* at head pfns *heads* to *value* in the
    per-page array *a*.

    Folios are aligned to their size, so a large folio is one row of *a* seen as rows
    of ``2**order`` pages: one row assignment each, with no array of page numbers.
    """
    if order < 3:
        a[pages_of(heads, order)] = value
        return
    aligned_rows(a, 1 << order)[np.asarray(heads, dtype=np.int64) >> order] = value


def heads_at(pfn: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The head pfn of the folio of *order* (per page) holding each page *pfn* (folios
    are aligned to their size)."""
    return pfn & ~((np.int64(1) << order.astype(np.int64)) - 1)


def pages_of(heads: np.ndarray, order: int) -> np.ndarray:
    """All page pfns of folios of one *order* given by head pfn."""
    heads = np.asarray(heads, dtype=np.int64)
    if order == 0:
        return heads
    return (heads[:, None] + np.arange(1 << order, dtype=np.int64)).ravel()
