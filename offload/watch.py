"""Verify mode's watch for writes a backend makes outside its destinations.

Checking every frame of every node after each batch would cost a copy of all memory
per batch. Instead, before the copy step, :class:`WriteWatch` saves

- the batch's source pages (a backend that writes its sources would destroy the data),
- the page on either side of each destination folio (overruns and off-by-one
  addresses, the common DMA bugs), and
- a random sample of in-use pages of every node the batch touches,

keeping only pages that some process owns (free frames, other migrations' destinations
and quarantined frames hold nothing to protect). After the copy step, :meth:`check`
finds what changed, puts the saved bytes back and says how many pages were hit. The
engine holds the machine lock and runs no other copy step meanwhile, so every change is
the backend's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import devmem
from .arrays import expand_ranges
from .batch import FolioBatch

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

#: In-use pages sampled per node and batch.
SAMPLE_PAGES = 256


class WriteWatch:
    """Saved copies of the pages a backend must not change during one batch copy.

    Parameters
    ----------
    nodes : sequence of Node
        The machine's nodes.
    batch : FolioBatch
        The batch about to be copied.
    rng : numpy.random.Generator
        Chooses the sampled pages.
    """

    def __init__(self, nodes: Sequence[Node], batch: FolioBatch, rng: np.random.Generator) -> None:
        self._saved: list[tuple[int, np.ndarray, np.ndarray]] = []
        npages = batch.npages
        src_pages = expand_ranges(batch.src_pfn, npages)
        src_nodes = np.repeat(batch.src_node, npages)
        edges = np.concatenate((batch.dst_pfn - 1, batch.dst_pfn + npages))
        edge_nodes = np.concatenate((batch.dst_node, batch.dst_node))
        for node in nodes:
            if node.id not in set(batch.src_node.tolist()) | set(batch.dst_node.tolist()):
                continue
            cand = [src_pages[src_nodes == node.id], edges[edge_nodes == node.id]]
            used = np.flatnonzero(node.order >= 0)
            if used.size:
                cand.append(rng.choice(used, min(SAMPLE_PAGES, used.size), replace=False))
            pfns = np.unique(np.concatenate(cand))
            pfns = pfns[(pfns >= 0) & (pfns < node.nr_pages)]
            pfns = pfns[node.order[pfns] >= 0]
            pfns = pfns[node.obj[node.head_of(pfns)] >= 0]
            if pfns.size:
                self._saved.append((node.id, pfns, devmem.gather(node.frames, pfns)))

    @property
    def pages(self) -> int:
        """Pages watched."""
        return sum(p.size for _, p, _ in self._saved)

    def check(self, memory: Mapping[int, Any]) -> int:
        """Restore every watched page that changed; return how many did."""
        hit = 0
        for nid, pfns, rows in self._saved:
            now = devmem.gather(memory[nid], pfns)
            bad = (now != rows).any(axis=1)
            if bad.any():
                devmem.scatter(memory[nid], pfns[bad], rows[bad])
                hit += int(bad.sum())
        return hit


__all__ = ["SAMPLE_PAGES", "WriteWatch"]
