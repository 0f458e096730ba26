"""A vectorised buddy allocator over one node's page frames.

Free memory is kept, per order ``k``, as a bitmap over the node's naturally aligned
blocks of ``2**k`` pages: bit ``b`` is set when block ``b`` is a free block of exactly
that order. Allocating many blocks of one order takes the free blocks of that order
first, then splits larger ones. Freeing does not merge at once: like the kernel's
per-CPU page lists, freed blocks wait, and buddies are merged (over whole bitmaps, one
vectorised pass per order) when an allocation cannot be met otherwise. Whether a
request can be met is therefore exactly what an eager buddy allocator would answer.
"""

from __future__ import annotations

import numpy as np

from .arrays import aligned_rows
from .constants import MAX_FOLIO_ORDER
from .errors import BadArgument

#: Layouts a node's free memory can start in.
LAYOUTS = ("fresh", "aged")
#: Aged layout: the share of 2 MiB blocks broken into smaller free blocks.
AGED_SPLIT_SHARE = 0.75


class BuddyAllocator:
    """Buddy allocator for ``nr_pages`` frames, orders ``0..max_order``.

    Parameters
    ----------
    nr_pages : int
        Number of base pages managed.
    max_order : int
        Largest block order (9 = 2 MiB with 4 KiB pages).
    layout : {"fresh", "aged"}
        ``fresh``: free blocks are handed out in address order, as after boot.
        ``aged``: as on a machine that has run for a while: three quarters of the 2 MiB
        blocks start broken into free blocks of every smaller order, and blocks of each
        order are handed out in a scattered order (a fixed random permutation), so that
        consecutive allocations land far apart; whole 2 MiB blocks remain for THPs.
    seed : int
        Makes the aged layout reproducible.
    """

    def __init__(
        self, nr_pages: int, max_order: int = MAX_FOLIO_ORDER, layout: str = "fresh", seed: int = 0
    ) -> None:
        self.nr_pages = int(nr_pages)
        self.max_order = int(max_order)
        self._free = [np.zeros(self.nr_pages >> k, dtype=bool) for k in range(max_order + 1)]
        self._count = [0] * (max_order + 1)
        self.free_pages = 0
        full = self.nr_pages >> max_order
        self._free[max_order][:full] = True
        self._count[max_order] = full
        pos = full << max_order
        for k in range(max_order - 1, -1, -1):
            if self.nr_pages - pos >= 1 << k:
                self._free[k][pos >> k] = True
                self._count[k] += 1
                pos += 1 << k
        self.free_pages = self.nr_pages
        self.layout = layout
        self._perm: list[np.ndarray] | None = None
        #: per order, the search position (in the aged order, or by address) before
        #: which no block of that order is free: a search starts there, not at the
        #: start (a node's allocations in a row would each scan what the earlier ones
        #: took); a free block put back sets it to 0
        self._low = [0] * (max_order + 1)
        if layout == "aged":
            self._age(np.random.default_rng(seed))
        elif layout != "fresh":
            raise BadArgument(f"layout: expected one of {LAYOUTS}, got {layout!r}")

    def _age(self, rng: np.random.Generator) -> None:
        """Break most 2 MiB blocks into free blocks of random smaller orders; hand out
        the blocks of each order in a fixed random order."""
        top = self.max_order
        blocks = np.flatnonzero(self._free[top])
        broken = blocks[rng.random(blocks.size) < AGED_SPLIT_SHARE]
        into = rng.integers(0, top, broken.size)
        self._free[top][broken] = False
        self._count[top] -= broken.size
        for k in range(top):
            heads = broken[into == k] << top
            if heads.size:
                per = 1 << (top - k)
                sub = (heads[:, None] + (np.arange(per, dtype=np.int64) << k)).ravel()
                self._insert(sub, k)
        self._perm = [rng.permutation(bm.size) for bm in self._free]

    @property
    def metadata_bytes(self) -> int:
        """Bytes of the free lists (and the aged layout's search orders)."""
        perm = self._perm or []
        return sum(x.nbytes for x in self._free) + sum(x.nbytes for x in perm)

    def free_blocks(self, order: int) -> int:
        """Number of free buddy blocks of exactly *order*."""
        return self._count[order]

    def largest_free_order(self) -> int:
        """The largest order with a free block, or -1 when nothing is free."""
        self.coalesce()
        for k in range(self.max_order, -1, -1):
            if self._count[k]:
                return k
        return -1

    def _take(self, order: int, n: int) -> np.ndarray:
        """Remove up to *n* free blocks of exactly *order*; return their block indices."""
        if n <= 0 or self._count[order] == 0:
            return np.empty(0, dtype=np.int64)
        bm = self._free[order]
        low = self._low[order]
        if self._perm is not None:
            idx, self._low[order] = _first_set_in(bm, self._perm[order], n, low)
        elif n >= self._count[order]:
            idx = np.flatnonzero(bm[low:]) + low
            self._low[order] = bm.size
        else:
            idx, self._low[order] = _first_set(bm, n, low)
        bm[idx] = False
        self._count[order] -= idx.size
        return idx.astype(np.int64, copy=False)

    def alloc(self, n: int, order: int) -> np.ndarray:
        """Allocate up to *n* blocks of *order*; return the head pfns of those obtained.

        Fewer than *n* come back when memory (or contiguity) runs out; nothing is lost:
        the part of a split block that is not handed out returns to the free lists.
        """
        if not 0 <= order <= self.max_order:
            raise BadArgument(f"order must be in 0..{self.max_order}, got {order}")
        got = self._alloc(int(n), order)
        have = sum(g.size for g in got)
        if have < n and order > 0 and self.free_pages - (have << order) >= (n - have) << order:
            self.coalesce()
            got += self._alloc(int(n) - have, order)
        if not got:
            return np.empty(0, dtype=np.int64)
        heads = np.concatenate(got) if len(got) > 1 else got[0]
        self.free_pages -= heads.size << order
        return heads

    def alloc_one(self, order: int) -> int:
        """``alloc(1, order)`` in scalars (the same block): its head pfn, or -1."""
        if not 0 <= order <= self.max_order:
            raise BadArgument(f"order must be in 0..{self.max_order}, got {order}")
        h = self._alloc1(order)
        if h < 0 and order > 0 and self.free_pages >= 1 << order:
            self.coalesce()
            h = self._alloc1(order)
        if h >= 0:
            self.free_pages -= 1 << order
        return h

    def _alloc1(self, order: int) -> int:
        """``_alloc(1, order)``: the first free block of *order*, else the first of the
        next larger order with one, whose other parts go to the free lists of *order*."""
        for k in range(order, self.max_order + 1):
            if self._count[k]:
                head = self._take1(k) << k
                if k > order:
                    rest = head + (np.arange(1, 1 << (k - order), dtype=np.int64) << order)
                    self._insert(rest, order)
                return head
        return -1

    def _take1(self, order: int) -> int:
        """``_take(order, 1)`` when a block of *order* is free: its block index."""
        bm = self._free[order]
        low = self._low[order]
        if self._perm is not None:
            b, self._low[order] = _first_set_in1(bm, self._perm[order], low)
        else:
            b = _first_set1(bm, low)
            self._low[order] = b + 1
        bm[b] = False
        self._count[order] -= 1
        return b

    def _alloc(self, need: int, order: int) -> list[np.ndarray]:
        got: list[np.ndarray] = []
        blocks = self._take(order, need)
        if blocks.size:
            got.append(blocks << order)
            need -= blocks.size
        k = order + 1
        while need > 0 and k <= self.max_order:
            per = 1 << (k - order)
            big = self._take(k, -(-need // per))
            if big.size:
                heads = ((big << k)[:, None] + (np.arange(per, dtype=np.int64) << order)).ravel()
                got.append(heads[:need])
                if heads.size > need:
                    self._insert(heads[need:], order)
                need -= min(need, heads.size)
            k += 1
        return got

    def free(self, heads: np.ndarray, order: int) -> None:
        """Return blocks of *order* (by head pfn); buddies merge on demand."""
        heads = np.asarray(heads, dtype=np.int64)
        if heads.size == 0:
            return
        self.free_pages += heads.size << order
        self._insert(heads, order)

    def free_one(self, head: int, order: int) -> None:
        """``free`` of one block."""
        self.free_pages += 1 << order
        self._free[order][head >> order] = True
        self._count[order] += 1
        self._low[order] = 0

    def _insert(self, heads: np.ndarray, order: int) -> None:
        bm = self._free[order]
        bm[heads >> order] = True
        self._count[order] += heads.size
        self._low[order] = 0

    def check(self, order_of_page: np.ndarray | None = None) -> list[str]:
        """Check the free lists; return what is wrong (empty: consistent).

        Each order's count must equal its bitmap's set bits and ``free_pages`` their
        pages (a block freed twice sets one bit but counts twice); no two free blocks may
        overlap; with *order_of_page* (the node's per-page folio order, -1 when free), no
        page of a free block may be in a folio.
        """
        problems = []
        covered = np.zeros(self.nr_pages, dtype=np.int16)
        pages = 0
        for k, bm in enumerate(self._free):
            heads = np.flatnonzero(bm).astype(np.int64) << k
            if heads.size != self._count[k]:
                problems.append(
                    f"order {k}: {self._count[k]} free blocks counted, {heads.size} in the list"
                )
            pages += heads.size << k
            # blocks of order k are aligned rows of 2**k pages, each listed once
            aligned_rows(covered, 1 << k)[heads >> k] += 1
        if pages != self.free_pages:
            problems.append(f"{self.free_pages} free pages counted, {pages} in the lists")
        twice = int((covered > 1).sum())
        if twice:
            problems.append(f"{twice} pages in two free blocks")
        if order_of_page is not None:
            used = int((order_of_page[covered > 0] >= 0).sum())
            if used:
                problems.append(f"{used} pages both free and in a folio")
        return problems

    def coalesce(self) -> None:
        """Merge every pair of free buddies, from order 0 up (one pass per order)."""
        for k in range(self.max_order):
            if self._count[k] < 2:
                continue
            bm = self._free[k]
            even = bm.size & ~1
            pairs = bm[:even].reshape(-1, 2)
            both = pairs[:, 0] & pairs[:, 1]
            merged = int(np.count_nonzero(both))
            if not merged:
                continue
            pairs[both] = False
            self._count[k] -= 2 * merged
            self._free[k + 1][: both.size] |= both
            self._count[k + 1] += merged
            self._low[k + 1] = 0


def _first_set_in(
    bm: np.ndarray, perm: np.ndarray, n: int, start: int = 0
) -> tuple[np.ndarray, int]:
    """The first *n* set entries of *bm* in the order *perm* visits them, from position
    *start* of *perm* (none is set before it), and the position after the last taken
    (where no set entry is left before)."""
    out: list[np.ndarray] = []
    have = 0
    lo = start
    chunk = max(64, n * 4)  # small requests look at a few entries; the window grows
    while lo < perm.size:
        sel = perm[lo : lo + chunk]
        at = np.flatnonzero(bm[sel])
        if at.size:
            take = at[: n - have]
            out.append(sel[take])
            have += take.size
            if have >= n:
                return np.concatenate(out) if len(out) > 1 else out[0], lo + int(take[-1]) + 1
        lo += chunk
        chunk *= 4
    return (np.concatenate(out) if out else np.empty(0, dtype=np.int64)), perm.size


def _first_set(bm: np.ndarray, n: int, start: int = 0) -> tuple[np.ndarray, int]:
    """Indices of the first *n* set entries of *bm* from *start* (none is set before
    it), scanning in chunks, and the index after the last taken."""
    out: list[np.ndarray] = []
    have = 0
    chunk = max(4096, n * 4)
    for lo in range(start, bm.size, chunk):
        idx = np.flatnonzero(bm[lo : lo + chunk])
        if idx.size:
            take = idx[: n - have] + lo
            out.append(take)
            have += take.size
            if have >= n:
                return np.concatenate(out) if len(out) > 1 else out[0], int(take[-1]) + 1
    return (np.concatenate(out) if out else np.empty(0, dtype=np.int64)), bm.size


def _first_set_in1(bm: np.ndarray, perm: np.ndarray, start: int = 0) -> tuple[int, int]:
    """``_first_set_in(bm, perm, 1, start)`` in scalars, *bm* having a set entry."""
    lo, chunk = start, 64
    while lo < perm.size:
        sel = perm[lo : lo + chunk]
        hit = bm[sel]
        i = int(hit.argmax())
        if hit[i]:
            return int(sel[i]), lo + i + 1
        lo += chunk
        chunk *= 4
    raise AssertionError("buddy: a free count with no free block")


def _first_set1(bm: np.ndarray, start: int = 0) -> int:
    """``_first_set(bm, 1, start)[0]`` as an int, *bm* having a set entry."""
    chunk = 4096
    for lo in range(start, bm.size, chunk):
        seg = bm[lo : lo + chunk]
        i = int(seg.argmax())
        if seg[i]:
            return lo + i
    raise AssertionError("buddy: a free count with no free block")
