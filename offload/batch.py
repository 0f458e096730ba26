"""FolioBatch: the folios one pass of the engine copies together, as parallel arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .arrays import expand_ranges, folio_pages, run_boundaries, total_pages
from .constants import MR_SYSCALL, PAGE_SHIFT
from .errors import BadArgument, BadArgumentType


@dataclass(frozen=True)
class Runs:
    """Coalesced runs of a batch: each run is one contiguous copy of ``npages`` pages.

    ``start[r]:stop[r]`` are the batch positions of the folios the run covers.
    """

    src_node: np.ndarray
    src_pfn: np.ndarray
    dst_node: np.ndarray
    dst_pfn: np.ndarray
    npages: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def __len__(self) -> int:
        return int(self.npages.size)


class FolioBatch:
    """A batch of folio copies: source and destination of each folio, and its marker.

    Parameters
    ----------
    src_node, src_pfn, dst_node, dst_pfn, order : array_like
        One entry per folio: where its head page is now, where it goes, its order.
    memory : Mapping[int, numpy.ndarray]
        Node id -> that node's frames (``(nr_pages, PAGE_SIZE)`` uint8), so that a
        backend can copy the batch with no other context.
    reason : str
        The migrate reason (a name from ``offload.constants.MIGRATE_REASONS``).
    copied : numpy.ndarray, optional
        The markers (FOLIO_CONTENT_COPIED), all False when omitted.

    Notes
    -----
    A backend sets ``copied[i] = True`` only after folio ``i`` was copied in full;
    the engine copies every unmarked folio on the CPU.
    """

    __slots__ = (
        "copied",
        "dst_node",
        "dst_pfn",
        "index",
        "memory",
        "order",
        "reason",
        "src_node",
        "src_pfn",
    )

    def __init__(
        self,
        src_node: ArrayLike,
        src_pfn: ArrayLike,
        dst_node: ArrayLike,
        dst_pfn: ArrayLike,
        order: ArrayLike,
        *,
        memory: Mapping[int, np.ndarray],
        reason: str = MR_SYSCALL,
        copied: np.ndarray | None = None,
        index: np.ndarray | None = None,
    ) -> None:
        self.src_node = np.asarray(src_node, dtype=np.int32)
        self.src_pfn = np.asarray(src_pfn, dtype=np.int64)
        self.dst_node = np.asarray(dst_node, dtype=np.int32)
        self.dst_pfn = np.asarray(dst_pfn, dtype=np.int64)
        self.order = np.asarray(order, dtype=np.int8)
        n = self.src_pfn.size
        for name in ("src_node", "dst_node", "dst_pfn", "order"):
            if getattr(self, name).shape != (n,):
                raise BadArgument(f"{name}: expected shape ({n},), got {getattr(self, name).shape}")
        self.copied = np.zeros(n, dtype=bool) if copied is None else copied
        self.memory = memory
        self.reason = reason
        #: positions of these folios in the batch this one was cut from (or None)
        self.index = index

    def __len__(self) -> int:
        return int(self.src_pfn.size)

    def __repr__(self) -> str:
        return (
            f"FolioBatch({len(self)} folios, {self.nbytes} bytes, "
            f"{int(self.copied.sum())} copied, reason={self.reason!r})"
        )

    def __getitem__(self, sel: slice | np.ndarray) -> FolioBatch:
        """A sub-batch (slice, boolean mask or index array) with its own markers.

        Its arrays are copies (``batch[:]`` is a detached copy of the whole batch), its
        metadata read-only. Merge its markers back with :meth:`absorb`.
        """
        if isinstance(sel, (int, np.integer)):
            raise BadArgumentType("index a FolioBatch with a slice, mask or index array")
        if isinstance(sel, slice):  # no index array of the whole batch to cut
            index = np.arange(*sel.indices(len(self)), dtype=np.int64)
        else:
            index = np.arange(len(self), dtype=np.int64)[sel]
        sub = FolioBatch(
            self.src_node[index],
            self.src_pfn[index],
            self.dst_node[index],
            self.dst_pfn[index],
            self.order[index],
            memory=self.memory,
            reason=self.reason,
            copied=self.copied[index],
            index=index,
        )
        # a backend reads its sub-batch's metadata; nothing it does changes the engine's
        for name in ("src_node", "src_pfn", "dst_node", "dst_pfn", "order", "index"):
            getattr(sub, name).flags.writeable = False
        return sub

    def absorb(self, sub: FolioBatch) -> None:
        """OR the markers of a sub-batch made by ``self[...]`` back into this batch."""
        if sub.index is None:
            raise BadArgument("sub: not a sub-batch of this batch (no index)")
        self.copied[sub.index] |= sub.copied

    @property
    def npages(self) -> np.ndarray:
        """Base pages per folio."""
        return folio_pages(self.order)

    @property
    def nbytes(self) -> int:
        """Payload bytes of the whole batch."""
        return total_pages(self.order) << PAGE_SHIFT

    def runs(self, contiguous: str = "both", breaks: np.ndarray | None = None) -> Runs:
        """Coalesce neighbouring folios into runs.

        Parameters
        ----------
        contiguous : {"both", "dst"}
            ``"both"``: folios contiguous in source and destination (one memcpy or DMA
            descriptor per run). ``"dst"``: contiguous in the destination only (one
            gather into a contiguous destination per run; ``src_pfn`` of the run is
            then only its first folio's).
        breaks : numpy.ndarray, optional
            Batch positions where a run must start anyway (e.g. DMA channel slices).
        """
        if contiguous not in ("both", "dst"):
            raise BadArgument(f"contiguous: expected 'both' or 'dst', got {contiguous!r}")
        n = len(self)
        npages = self.npages
        if n == 0:
            e = np.empty(0, dtype=np.int64)
            return Runs(e, e, e, e, e, e, e)
        step = npages[:-1]
        cont = np.equal(self.dst_pfn[1:], self.dst_pfn[:-1] + step)
        if contiguous == "both":
            cont &= np.equal(self.src_pfn[1:], self.src_pfn[:-1] + step)
        for nodes in (self.dst_node, self.src_node) if contiguous == "both" else (self.dst_node,):
            if nodes[0] != nodes[-1] or nodes.min() != nodes.max():
                cont &= nodes[1:] == nodes[:-1]
        if breaks is not None:
            b = np.asarray(breaks, dtype=np.int64)
            b = b[(b > 0) & (b < n)]
            cont[b - 1] = False
        if not cont.any():  # scattered folios: every folio is a run of its own
            idx = np.arange(n + 1, dtype=np.int64)
            return Runs(
                self.src_node, self.src_pfn, self.dst_node, self.dst_pfn, npages, idx[:-1], idx[1:]
            )
        start = run_boundaries(cont)
        stop = np.append(start[1:], n)
        csum = np.concatenate(([0], np.cumsum(npages)))
        return Runs(
            self.src_node[start],
            self.src_pfn[start],
            self.dst_node[start],
            self.dst_pfn[start],
            csum[stop] - csum[start],
            start,
            stop,
        )

    def page_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Every base page of the batch: (source pfns, destination pfns), in order."""
        npages = self.npages
        return expand_ranges(self.src_pfn, npages), expand_ranges(self.dst_pfn, npages)

    def pages(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every base page of the batch: (src node, src pfn, dst node, dst pfn), in order."""
        npages = self.npages
        sp, dp = self.page_indices()
        return np.repeat(self.src_node, npages), sp, np.repeat(self.dst_node, npages), dp


def handed_marks(held: object, n: int) -> np.ndarray:
    """The marks a plugin left in the array it was handed (*held*, the caller's own
    reference, taken before the call): a copy while it is still a bool array of *n*
    entries, else none. What the plugin bound to its batch object instead counts for
    nothing."""
    if type(held) is np.ndarray and held.dtype == np.bool_ and held.shape == (n,):
        return held.copy()
    return np.zeros(n, dtype=bool)
