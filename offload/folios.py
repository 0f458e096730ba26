"""Folios as parallel arrays, and the vectorised helpers that read and write their
per-frame metadata across nodes (loops over distinct nodes and orders, never folios)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .node import heads_at

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node


@dataclass
class Folios:
    """Folios as parallel arrays: where each is (source node and head pfn), its order,
    and where it goes (destination node), in the words of :class:`~offload.FolioBatch`
    and the kernel (src, dst)."""

    src_node: np.ndarray
    src_pfn: np.ndarray
    order: np.ndarray
    dst_node: np.ndarray

    def __len__(self) -> int:
        return int(self.src_pfn.size)

    def __getitem__(self, sel: Any) -> Folios:
        return Folios(self.src_node[sel], self.src_pfn[sel], self.order[sel], self.dst_node[sel])

    @staticmethod
    def concat(parts: list[Folios]) -> Folios:
        """The folios of *parts*, one after the other."""
        if not parts:
            e = np.empty(0, dtype=np.int64)
            return Folios(e.astype(np.int32), e, e.astype(np.int8), e.astype(np.int32))
        return Folios(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("src_node", "src_pfn", "order", "dst_node")
            )
        )


#: the indices of a one-element array (read-only, shared)
_ONE = np.zeros(1, dtype=np.int64)
_ONE.flags.writeable = False


def groups1(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (key, indices) for each distinct key."""
    if keys.size <= 1:
        if keys.size:  # one folio, the common case of a one-page move_pages: no scan
            yield int(keys[0]), _ONE
        return
    first = keys[0]
    if (keys == first).all():
        yield int(first), np.arange(keys.size)
        return
    for k in np.unique(keys):
        yield int(k), np.flatnonzero(keys == k)


def groups(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (a, b, indices) for each distinct pair, restricted to *mask*."""
    if a.size == 1:
        if mask is None or mask[0]:
            yield int(a[0]), int(b[0]), _ONE
        return
    if mask is None or bool(mask.all()):  # no entry masked: no index arrays to gather
        base, aa, bb = np.arange(a.size), a, b
    else:
        base = np.flatnonzero(mask)
        aa, bb = a[base], b[base]
    if base.size == 0:
        return
    if (aa == aa[0]).all() and (bb == bb[0]).all():
        yield int(aa[0]), int(bb[0]), base
        return
    key = aa.astype(np.int64) * 64 + bb.astype(np.int64)
    for k in np.unique(key):
        sel = key == k
        yield int(k // 64), int(k % 64), base[sel]


def _one_node(nid: np.ndarray) -> int | None:
    """The node every entry of *nid* names, or None (none, or several)."""
    if nid.size == 0:
        return None
    first = int(nid[0])
    return first if nid.size == 1 or (nid == first).all() else None


def gather(nodes: Sequence[Node], nid: np.ndarray, pfn: np.ndarray, attr: str) -> np.ndarray:
    """``nodes[nid[i]].<attr>[pfn[i]]`` for every i."""
    if nid.size == 0:
        return np.empty(0, dtype=getattr(nodes[0], attr).dtype)
    one = _one_node(nid)
    if one is not None:
        return getattr(nodes[one], attr)[pfn]
    out = np.empty(nid.size, dtype=getattr(nodes[0], attr).dtype)
    for s, idx in groups1(nid):
        out[idx] = getattr(nodes[s], attr)[pfn[idx]]
    return out


def update(
    nodes: Sequence[Node],
    nid: np.ndarray,
    pfn: np.ndarray,
    attr: str,
    value: Any,
    op: str = "set",
) -> None:
    """Set, OR or AND ``nodes[nid[i]].<attr>[pfn[i]]`` with *value* (a scalar, or with
    ``op="set"`` one value per entry)."""
    one = _one_node(nid)
    per_entry = np.ndim(value) > 0
    for s, idx in groups1(nid) if one is None else ((one, None),):
        arr = getattr(nodes[s], attr)
        p = pfn if idx is None else pfn[idx]  # one node: no index arrays to build
        if op == "set":
            arr[p] = value[idx] if per_entry and idx is not None else value
        elif op == "or":
            arr[p] |= value
        else:
            arr[p] &= value


def clear_state(nodes: Sequence[Node], nid: np.ndarray, pfn: np.ndarray, bits: int) -> None:
    """Clear the state *bits* (``ISOLATED``, ``MIGRATING``) of the folios (nid, pfn)."""
    update(nodes, nid, pfn, "state", ~np.uint8(bits), op="and")


def free_folios(
    nodes: Sequence[Node], nid: np.ndarray, heads: np.ndarray, order: np.ndarray
) -> None:
    """Free the folios at (``nid[i]``, ``heads[i]``) of ``order[i]``, grouped by node and
    order."""
    for d, k, idx in groups(nid, order):
        nodes[d].free_folios(heads[idx], k)


def heads_of(
    nodes: Sequence[Node], nid: np.ndarray, pfn: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The head frame and the order of the folio holding each frame (nid, pfn), from one
    read of the frames' order (every page of a folio holds its order)."""
    order = gather(nodes, nid, pfn, "order")
    pfn = np.asarray(pfn, dtype=np.int64)
    if not order.any():  # base pages: each frame is its own head
        return pfn, order
    return heads_at(pfn, order), order


__all__ = [
    "Folios",
    "clear_state",
    "free_folios",
    "gather",
    "groups",
    "groups1",
    "heads_of",
    "update",
]
