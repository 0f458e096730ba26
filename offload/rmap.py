"""The reverse map: which memory object (and page of it) maps each folio.

What the kernel's rmap walks do for migration: point every mapping of a moved folio at
its copy (``remove_migration_ptes``), including the mappings of a folio shared
copy-on-write since a fork; tell whether a process still maps a frame; and keep the
deferred split queue of partly unmapped large folios. The copy-on-write and reaping
bookkeeping of the address spaces lives here too (``clone_cow``, ``cow_copy``,
``unmap_pages``): one owner for who maps what.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import devmem
from .arrays import as_run, expand_ranges, folio_pages
from .errors import oserror
from .folios import Folios, gather, groups1
from .mm import PTE_NONE, PTE_ZERO, MemObject
from .node import pages_of

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node


class Rmap:
    """Memory objects by id, the copy-on-write sharers and the deferred split queue.

    Attributes
    ----------
    objects : dict
        Object id -> :class:`~offload.mm.MemObject`.
    cow : dict
        (node, folio head) -> [(object id, its page of the head), ...]: the mappings
        beyond the first of folios shared copy-on-write after a fork.
    deferred : set
        (node, folio head) of large folios partly unmapped, split only when memory runs
        short on their node or a migration must split them.
    """

    def __init__(self) -> None:
        self.objects: dict[int, MemObject] = {}
        self.cow: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.deferred: set[tuple[int, int]] = set()
        self._oids = itertools.count(1)

    def next_id(self) -> int:
        """A fresh memory object id."""
        return next(self._oids)

    def mapped(self, node: Node, pfns: np.ndarray) -> np.ndarray:
        """Per page frame of *node* (order-0 folios): whether a process still maps it."""
        out = np.zeros(pfns.size, dtype=bool)
        oid = node.obj[pfns]
        for o, idx in groups1(oid):
            obj = self.objects.get(o)
            if obj is not None:
                out[idx] = obj.mapcount[node.objidx[pfns[idx]]] > 0
        return out

    def remove_migration_ptes(self, nodes: Sequence[Node], g: Folios, dpfn: np.ndarray) -> None:
        """Point every mapping of the folios *g* at their copies ``(g.dst_node, dpfn)``
        and record the copies' owners. The sources are not freed here."""
        if len(g) == 1:
            s, h, k = int(g.src_node[0]), int(g.src_pfn[0]), int(g.order[0])
            self.remap_folio(nodes, s, h, k, int(g.dst_node[0]), int(dpfn[0]))
            return
        self._remap_many(nodes, g, dpfn)
        if self.cow:  # some folios are shared copy-on-write (there was a fork)
            cow = gather(nodes, g.src_node, g.src_pfn, "cow")
            if cow.any():
                self._move_cow(nodes, g, dpfn, cow)
        if self.deferred:  # a partly unmapped folio moves whole, and stays queued
            for i in np.flatnonzero(g.order > 0).tolist():
                self._requeue(
                    int(g.src_node[i]), int(g.src_pfn[i]), int(g.dst_node[i]), int(dpfn[i])
                )

    def remap_folio(
        self, nodes: Sequence[Node], nid: int, head: int, order: int, target: int, dpfn: int
    ) -> None:
        """:meth:`remove_migration_ptes` of one folio, in scalars (a one-page move_pages):
        the folio of *order* at (*nid*, *head*) now lives at (*target*, *dpfn*)."""
        src, k = nodes[nid], 1 << order
        o, first = int(src.obj[head]), int(src.objidx[head])
        obj = self.objects[o]
        if k == 1:
            if obj.mapcount[first] > 0:
                obj.node[first] = target
                obj.pfn[first] = dpfn
        else:
            # pages of a partly unmapped folio stay unmapped; pages copied on a write
            # (a THP shared copy-on-write) map their copies
            rng = slice(first, first + k)
            live = (obj.mapcount[rng] > 0) & (obj.pfn[rng] - head == np.arange(k))
            live &= obj.node[rng] == nid
            if live.all():
                obj.node[first : first + k] = target
                obj.pfn[first : first + k] = np.arange(dpfn, dpfn + k)
            else:
                i = np.flatnonzero(live)
                obj.node[first + i] = target
                obj.pfn[first + i] = dpfn + i
        dst = nodes[target]
        dst.obj[dpfn] = o
        dst.objidx[dpfn] = first
        if self.cow:
            cow = int(src.cow[head])
            if cow:
                self._move_cow1(nodes, nid, head, k, target, dpfn, cow)
        if self.deferred and order:
            self._requeue(nid, head, target, dpfn)

    def _requeue(self, nid: int, head: int, target: int, dpfn: int) -> None:
        """A queued folio (deferred split) that moved stays queued at its copy."""
        key = (nid, head)
        if key in self.deferred:
            self.deferred.discard(key)
            self.deferred.add((target, dpfn))

    def _remap_many(self, nodes: Sequence[Node], g: Folios, dpfn: np.ndarray) -> None:
        oid = gather(nodes, g.src_node, g.src_pfn, "obj")
        oidx = gather(nodes, g.src_node, g.src_pfn, "objidx")
        base = not g.order.any()  # base pages only: a folio is its one page
        npages = np.empty(0, dtype=np.int64) if base else folio_pages(g.order)  # base: unread
        for o, idx in groups1(oid):
            obj = self.objects[int(o)]
            if base:
                whole = idx.size == len(g)  # one object maps them all
                pages = oidx if whole else oidx[idx]
                node = g.dst_node if whole else g.dst_node[idx]
                pfn = dpfn if whole else dpfn[idx]
                run = as_run(pages)
                if run is not None and (obj.mapcount[run] > 0).all():
                    # pages one after another in the mapping (a region moved whole):
                    # slices of it, and one node written as one value
                    one = int(node[0])
                    obj.node[run] = one if (node == one).all() else node
                    obj.pfn[run] = pfn
                    continue
            elif not self.cow and self._remap_run(
                obj, oidx[idx], npages[idx], g.dst_node[idx], dpfn[idx]
            ):
                continue
            else:
                pages = expand_ranges(oidx[idx], npages[idx])
                node = np.repeat(g.dst_node[idx], npages[idx])
                pfn = expand_ranges(dpfn[idx], npages[idx])
            live = obj.mapcount[pages] > 0  # pages of a partly unmapped folio stay unmapped
            if not base and self.cow:  # pages copied on a write map their copies
                live &= obj.pfn[pages] == expand_ranges(g.src_pfn[idx], npages[idx])
            if not live.all():
                pages, node, pfn = pages[live], node[live], pfn[live]
            obj.node[pages] = node
            obj.pfn[pages] = pfn
        for d, idx in groups1(g.dst_node):
            nd = nodes[d]
            if idx.size == len(g):  # one target node (a move_pages group)
                nd.obj[dpfn] = oid
                nd.objidx[dpfn] = oidx
            else:
                nd.obj[dpfn[idx]] = oid[idx]
                nd.objidx[dpfn[idx]] = oidx[idx]

    @staticmethod
    def _remap_run(
        obj: MemObject, first: np.ndarray, npages: np.ndarray, node: np.ndarray, dpfn: np.ndarray
    ) -> bool:
        """Large folios of one size mapped one after another in *obj* (a region moved
        front to back), every page mapped: point their pages at the copies in one pass
        over a slice of the object, with no page index arrays. False (nothing done)
        where they are not so laid out; the caller then takes the general path."""
        n = int(npages[0])
        if not ((npages == n).all() and (np.diff(first) == n).all()):
            return False
        rng = slice(int(first[0]), int(first[0]) + n * first.size)
        if not (obj.mapcount[rng] > 0).all():
            return False  # pages of a partly unmapped folio stay unmapped
        obj.node[rng] = node[0] if (node == node[0]).all() else np.repeat(node, n)
        # written in place: no temporary the size of the run
        np.add(dpfn[:, None], np.arange(n, dtype=np.int64), out=obj.pfn[rng].reshape(first.size, n))
        return True

    def _move_cow(
        self, nodes: Sequence[Node], g: Folios, dpfn: np.ndarray, cow: np.ndarray
    ) -> None:
        """Point the other mappings of folios shared copy-on-write at their copies."""
        for i in np.flatnonzero(cow).tolist():  # only folios shared since a fork
            s, h, t, nh = int(g.src_node[i]), int(g.src_pfn[i]), int(g.dst_node[i]), int(dpfn[i])
            self._move_cow1(nodes, s, h, 1 << int(g.order[i]), t, nh, int(cow[i]))

    def _move_cow1(
        self, nodes: Sequence[Node], s: int, h: int, n: int, t: int, nh: int, cow: int
    ) -> None:
        """:meth:`_move_cow` of the folio of *n* pages at (*s*, *h*), now at (*t*, *nh*)."""
        extras = self.cow.pop((s, h), [])
        for o, first in extras:
            obj = self.objects.get(o)
            if obj is not None:
                obj.repoint(first, n, s, h, t, nh)
        if extras:
            self.cow[(t, nh)] = extras
        nodes[t].cow[nh] = cow

    def map_zero_page(self, node: Node, heads: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Of the order-0 pieces *heads* of a split folio (positions *mask* of the whole
        split), those that a private mapping maps and that hold only zeros now map the
        shared zero page (the caller frees their frames). Returns, per position of the
        whole split, whether the piece was so remapped."""
        out = np.zeros(mask.size, dtype=bool)
        if heads.size == 0:
            return out
        zero = np.flatnonzero(~node.frames[heads].any(axis=1))
        cand = heads[zero]
        pos = np.flatnonzero(mask)[zero]
        for o, idx in groups1(node.obj[cand]):
            obj = self.objects.get(o)
            if obj is None or obj.shared:
                continue
            j = node.objidx[cand[idx]]
            mine = (obj.node[j] == node.id) & (obj.pfn[j] == cand[idx])
            obj.pfn[j[mine]] = PTE_ZERO
            obj.node[j[mine]] = -1
            out[pos[idx[mine]]] = True
        return out

    def unqueue(self, node_id: int, heads: np.ndarray) -> None:
        """Take the folios *heads* of node *node_id* off the deferred split queue."""
        if self.deferred:
            self.deferred.difference_update((node_id, h) for h in heads.tolist())

    def split_deferred(self, node: Node) -> int:
        """Split the partly unmapped folios of *node* queued for deferred split (those
        neither pinned, nor under migration, nor shared copy-on-write) and free their
        unmapped pages: the deferred split shrinker. Returns the pages freed."""
        freed = 0
        for key in [k for k in self.deferred if k[0] == node.id]:
            h = key[1]
            if node.order[h] <= 0 or node.obj[h] < 0:
                self.deferred.discard(key)
                continue
            if node.pins[h] or node.state[h] or node.cow[h]:
                continue
            obj = self.objects.get(int(node.obj[h]))
            self.deferred.discard(key)
            if obj is None:
                continue
            pieces = node.split_folios(np.array([h]), int(node.order[h]))
            idx = node.objidx[pieces]
            # a page copied on a write maps its copy: the piece is unmapped
            live = (obj.mapcount[idx] > 0) & (obj.pfn[idx] == pieces) & (obj.node[idx] == node.id)
            dead = pieces[~live]
            node.free_folios(dead, 0)
            freed += int(dead.size)
        return freed

    # -- copy-on-write and reaping (what a task's address space asks of the rmap) -------
    def clone_cow(self, nodes: Sequence[Node], obj: MemObject) -> MemObject:
        """A private object for a fork child: the same folios, shared copy-on-write."""
        c = MemObject(self.next_id(), obj.npages, obj.folio_order, obj.home, False)
        c.node[:] = obj.node
        c.pfn[:] = obj.pfn
        self.objects[c.id] = c
        present = obj.pfn >= 0
        for s in np.unique(obj.node[present]):
            node = nodes[int(s)]
            pages = np.flatnonzero(present & (obj.node == s))
            heads, at = np.unique(node.head_of(obj.pfn[pages]), return_index=True)
            first = pages[at] - (obj.pfn[pages[at]] - heads)  # object page of each head
            node.cow[heads] += 1
            for h, f in zip(heads.tolist(), first.tolist()):  # the rmap of shared folios
                self.cow.setdefault((int(s), h), []).append((c.id, f))
        return c

    def cow_mapcount(
        self, node: Node, pfn: np.ndarray, oid: np.ndarray, per_folio: bool
    ) -> np.ndarray:
        """Per frame *pfn* of *node* (mapped privately by object *oid*): the mappings other
        processes sharing its folio copy-on-write have.

        With *per_folio* (kernels with switch ``shared_per_folio``), every other process
        sharing the folio counts, whichever pages of it it maps; else only those that map
        this very page (``page_mapcount``): a child that unmapped, or copied on a write,
        part of a THP shares the rest of it only.
        """
        heads = node.head_of(pfn)
        cow = node.cow[heads].astype(np.int32)
        if per_folio or not cow.any():
            return cow
        out = np.zeros(pfn.size, dtype=np.int32)
        for h in np.unique(heads[cow > 0]).tolist():  # few: only folios shared since a fork
            at = np.flatnonzero(heads == h)
            mappers = [(int(node.obj[h]), int(node.objidx[h]))]
            mappers += self.cow.get((node.id, h), [])
            for o, first in mappers:
                obj = self.objects.get(o)
                if obj is None:
                    continue
                j = first + (pfn[at] - h)
                ok = (j >= 0) & (j < obj.npages)
                jj = np.where(ok, j, 0)
                ok &= (obj.node[jj] == node.id) & (obj.pfn[jj] == pfn[at]) & (obj.mapcount[jj] > 0)
                out[at] += (ok & (oid[at] != o)).astype(np.int32)
        return out

    def cow_copy_pages(
        self,
        nodes: Sequence[Node],
        memory: Mapping[int, Any],
        obj: MemObject,
        nid: int,
        head: int,
        pages: np.ndarray,
    ) -> None:
        """A write to pages *pages* of *obj* that map a large folio shared copy-on-write:
        as ``do_huge_pmd_wp_page`` (a shared THP is never copied whole), the writer's
        mapping of it is split and each page written gets its own 4 KiB copy; the writer
        keeps sharing the rest of the folio."""
        home = nodes[obj.home]
        new = home.alloc_folios(pages.size, 0)
        if new.size < pages.size:
            home.free_folios(new, 0)
            raise oserror(errno.ENOMEM, f"node {obj.home} has no room for a copy-on-write copy")
        devmem.copy_pages(
            memory, np.full(pages.size, nid), obj.pfn[pages], np.full(pages.size, obj.home), new
        )
        obj.node[pages] = obj.home
        obj.pfn[pages] = new
        home.obj[new] = obj.id
        home.objidx[new] = pages
        first = self.cow_first(nodes, nid, head, obj.id)
        n = 1 << int(nodes[nid].order[head])
        if not (obj.pfn[first : first + n] - head == np.arange(n)).any():
            self.cow_detach(nodes, nid, head, obj.id)  # it maps nothing of the folio now

    def cow_first(self, nodes: Sequence[Node], nid: int, head: int, oid: int) -> int:
        """The page of object *oid* where it maps the folio at (*nid*, *head*)."""
        node = nodes[nid]
        if int(node.obj[head]) == oid:
            return int(node.objidx[head])
        return next(f for o, f in self.cow.get((nid, head), []) if o == oid)

    def cow_detach(self, nodes: Sequence[Node], nid: int, head: int, oid: int) -> None:
        """Object *oid* stops mapping the copy-on-write folio at (*nid*, *head*)."""
        node = nodes[nid]
        key = (nid, head)
        extras = self.cow.get(key, [])
        if int(node.obj[head]) == oid:
            if extras:
                node.obj[head], node.objidx[head] = extras.pop(0)
        else:
            extras[:] = [e for e in extras if e[0] != oid]
        node.cow[head] = max(0, int(node.cow[head]) - 1)
        if not extras:
            self.cow.pop(key, None)
            self.queue_if_partial(nodes, nid, head)

    def queue_if_partial(self, nodes: Sequence[Node], nid: int, head: int) -> None:
        """A large folio no longer shared copy-on-write that its one owner maps only in part
        goes on the deferred split queue: the kernel queues a folio when it becomes partly
        mapped, here when the last other mapping of it went away."""
        node = nodes[nid]
        k = int(node.order[head])
        if not k or node.cow[head]:
            return
        owner = self.objects.get(int(node.obj[head]))
        if owner is None:
            return
        first = int(node.objidx[head])
        live = owner.mapcount[first : first + (1 << k)] > 0
        if live.any() and not live.all():
            self.deferred.add((nid, head))

    def cow_copy(
        self, nodes: Sequence[Node], memory: Mapping[int, Any], obj: MemObject, nid: int, head: int
    ) -> None:
        """Break copy-on-write: *obj* gets its own copy of the folio at (*nid*, *head*)."""
        node = nodes[nid]
        k = int(node.order[head])
        n = 1 << k
        first = self.cow_first(nodes, nid, head, obj.id)
        home = nodes[obj.home]
        new = home.alloc_folios(1, k)
        if new.size == 0:
            raise oserror(errno.ENOMEM, f"node {obj.home} has no room for a copy-on-write copy")
        devmem.copy_pages(
            memory,
            np.full(n, nid),
            pages_of(np.array([head]), k),
            np.full(n, obj.home),
            pages_of(new, k),
        )
        self.cow_detach(nodes, nid, head, obj.id)
        obj.repoint(first, n, nid, head, obj.home, int(new[0]))
        home.obj[new] = obj.id
        home.objidx[new] = first
        self.queue_if_partial(
            nodes, obj.home, int(new[0])
        )  # pages *obj* had unmapped stay unmapped

    def unmap_pages(self, nodes: Sequence[Node], obj: MemObject, idx: np.ndarray) -> None:
        """Drop one mapping of object pages *idx*; free folios left with no mapping.

        A large folio left partly mapped is split so that its unmapped part is freed (the
        kernel defers that split); a pinned one cannot split and waits for the rest of it.
        A pinned folio with no mapping left is freed when its last pin is dropped.
        """
        obj.mapcount[idx] -= 1
        gone = idx[obj.mapcount[idx] <= 0]
        dead = gone[obj.pfn[gone] >= 0]
        for s in np.unique(obj.node[dead]):
            node = nodes[int(s)]
            pages = dead[obj.node[dead] == s]
            heads = np.unique(node.head_of(obj.pfn[pages]))
            self.reap_partial(nodes, obj, node, heads, node.order[heads].astype(np.int64))
        obj.node[gone] = -1
        obj.pfn[gone] = PTE_NONE

    def reap_partial(
        self,
        nodes: Sequence[Node],
        obj: MemObject,
        node: Node,
        heads: np.ndarray,
        orders: np.ndarray,
    ) -> None:
        """Free the folios at *heads* that no process maps any more.

        A large folio left partly mapped stays whole and is queued for deferred split (see
        :meth:`~offload.rmap.Rmap.split_deferred`). A pinned folio with no mapping left is freed at its last
        unpin. A folio shared copy-on-write with another process is left to that process.
        """
        first = node.objidx[heads].copy()
        cow = node.cow[heads] > 0
        for i in np.flatnonzero(cow & (node.obj[heads] != obj.id)).tolist():
            first[i] = self.cow_first(nodes, node.id, int(heads[i]), obj.id)
        whole = _all_unmapped(obj, first, orders, node.id, heads)
        for h in heads[whole & cow].tolist():
            self.cow_detach(nodes, node.id, h, obj.id)
        heads, orders, whole = heads[~cow], orders[~cow], whole[~cow]
        # partly unmapped: the folio stays whole (it migrates whole) until memory runs short
        self.deferred.update((node.id, h) for h in heads[~whole & (orders > 0)].tolist())
        if self.deferred:  # a folio queued earlier and now wholly unmapped leaves the queue
            self.deferred.difference_update(
                (node.id, h) for h in heads[whole & (orders > 0)].tolist()
            )
        pinned = node.pins[heads] > 0
        node.obj[heads[whole & pinned]] = -1
        node.free_folios(heads[whole & ~pinned], orders[whole & ~pinned])


def _all_unmapped(
    obj: MemObject, first: np.ndarray, orders: np.ndarray, nid: int, heads: np.ndarray
) -> np.ndarray:
    """Per folio (object page range), whether no page of *obj* maps it any more (a page
    that was copied on a write maps its copy instead)."""
    lens = np.left_shift(1, orders)
    pages = expand_ranges(first, lens)
    if pages.size == 0:
        return np.ones(first.size, dtype=bool)
    live = (
        (obj.mapcount[pages] > 0)
        & (obj.pfn[pages] == expand_ranges(heads, lens))
        & (obj.node[pages] == nid)
    ).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    return np.add.reduceat(live, starts) == 0


__all__ = ["Rmap"]
