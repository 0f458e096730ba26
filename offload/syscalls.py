"""move_pages(2) and migrate_pages(2) on top of the migration engine."""

from __future__ import annotations

import errno
import itertools
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .constants import MAX_NUMNODES, MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MR_SYSCALL, PAGE_SHIFT
from .errors import BadArgument, check_int, oserror
from .folios import Folios, heads_of
from .uaccess import int_array

if TYPE_CHECKING:  # pragma: no cover
    from .host import SyscallHost, Task


class MoveResult(NamedTuple):
    """What ``move_pages`` returns: entries not migrated, and one status per entry."""

    ret: int
    status: list


_KEY_SHIFT = 40  # folio key: node << 40 | head pfn


def _target(host: SyscallHost, caller: Task, pid: object, need_mm: bool = True) -> Task:
    """The process *pid* names (0: the caller), if the caller may act on it.

    As the kernel: ESRCH for no such process; EPERM unless ``ptrace_may_access`` (same
    uid, or CAP_SYS_PTRACE; and a dumpable target, or CAP_SYS_PTRACE). CAP_SYS_NICE does
    not grant that. With *need_mm*, EINVAL for a zombie (``get_task_mm`` finds no mm);
    migrate_pages checks that after its node masks (:func:`_check_mm`).
    """
    if caller.exited:
        raise BadArgument(f"process {caller.pid} has exited and makes no more calls")
    pid = check_int(pid, "pid", minimum=0)
    if pid == 0:
        return caller
    target = host.find_task(pid)
    if target is None:
        raise oserror(errno.ESRCH, f"no process with pid {pid}")
    if not caller.may_ptrace(target):
        raise oserror(
            errno.EPERM,
            f"pid {pid} belongs to uid {target.uid}; uid {caller.uid} "
            "needs CAP_SYS_PTRACE to act on it"
            if target.uid != caller.uid
            else f"pid {pid} is not dumpable; acting on it needs CAP_SYS_PTRACE",
        )
    if need_mm:
        _check_mm(target)
    return target


def _check_mm(target: Task) -> None:
    """EINVAL for a zombie: its mm is gone (``get_task_mm`` returns NULL)."""
    if target.exited:
        raise oserror(errno.EINVAL, f"pid {target.pid} has exited (a zombie has no memory)")


def _check_flags(caller: Task, flags: int) -> None:
    if flags & ~(MPOL_MF_MOVE | MPOL_MF_MOVE_ALL):
        raise oserror(errno.EINVAL, f"flags {flags:#x}: only MPOL_MF_MOVE and MPOL_MF_MOVE_ALL")
    if flags & MPOL_MF_MOVE_ALL and not caller.privileged:
        raise oserror(errno.EPERM, "MPOL_MF_MOVE_ALL needs CAP_SYS_NICE")


def _one(values: Any) -> int | None:
    """The entry of a one-entry list, tuple or integer array, when it is an integer in
    the int64 range; else None (the general path parses and judges it)."""
    if type(values) in (list, tuple):
        if len(values) != 1:
            return None
        v = values[0]
    elif type(values) is np.ndarray and values.shape == (1,) and values.dtype.kind in "iu":
        v = values[0]
    else:
        return None
    if type(v) is int or isinstance(v, np.integer):
        v = int(v)
        if -(1 << 63) <= v < 1 << 63:
            return v
    return None


def move_pages(
    host: SyscallHost, caller: Task, pages: object, nodes: object, flags: object, pid: object
) -> MoveResult:
    """move_pages(2) by *caller* on the task *pid* names (0: the caller), on *host*.

    See :meth:`offload.process.Process.move_pages`.
    """
    flags = check_int(flags, "flags")
    addr, node = _one(pages), _one(nodes)
    if addr is not None and node is not None:
        _check_flags(caller, flags)
        one = _move_one(
            host, _target(host, caller, pid), addr, node, bool(flags & MPOL_MF_MOVE_ALL)
        )
        if one is not None:
            return one
    addrs = int_array(pages, "pages", pointers=True)
    targets = None if nodes is None else int_array(nodes, "nodes")
    if targets is not None and targets.size != addrs.size:
        raise BadArgument(f"nodes: has {targets.size} entries, pages has {addrs.size}")
    _check_flags(caller, flags)
    target = _target(host, caller, pid)
    m = host
    if addrs.size == 0:
        return MoveResult(0, [])
    if targets is None:
        with m.lock:
            status = _locate(host, target, addrs)[0]
        return MoveResult(0, status.tolist())
    # do_pages_move: walk the entries in order; a node that does not exist or has no
    # memory stops the walk (ENODEV) after the entries before it were migrated
    bad = (targets < 0) | (targets >= len(m.nodes))
    stop = int(np.argmax(bad)) if bad.any() else targets.size
    status = np.zeros(stop, dtype=np.int64)
    move_all = bool(flags & MPOL_MF_MOVE_ALL)
    with m.migration():
        # consecutive entries with the same target node are gathered and migrated together
        if stop == targets.size and (targets == targets[0]).all():
            bounds = [0, stop]  # one target node: one group
        else:
            starts = np.flatnonzero(np.diff(targets[:stop])) + 1
            bounds = np.concatenate(([0], starts, [stop])).tolist() if stop else [0]
        for s, e in itertools.pairwise(bounds):
            status[s:e] = _move_group(host, target, addrs[s:e], int(targets[s]), move_all)
    if stop < targets.size:
        err = oserror(
            errno.ENODEV,
            f"pages[{stop}]: node {int(targets[stop])} does not exist "
            f"or has no memory (nodes: 0..{len(m.nodes) - 1})",
        )
        #: statuses of the entries walked before the bad node; None for those after it
        err.status = status.tolist() + [None] * (targets.size - stop)  # type: ignore[attr-defined]
        raise err
    return MoveResult(int(np.count_nonzero(status != targets)), status.tolist())


def _move_one(
    host: SyscallHost, p: Task, addr: int, node: int, move_all: bool
) -> MoveResult | None:
    """A move_pages of one page, in scalars, or None where the general path must run:
    a node that does not exist, a closed machine, a folio that is large, held by
    another migration or pinned, or anything else :meth:`MigrationEngine.migrate_one`
    leaves to :meth:`MigrationEngine.migrate`. Entries that do not move are answered
    here (the page's node, -ENOENT, -EFAULT, -EACCES)."""
    m = host
    if not 0 <= node < len(m.nodes):
        return None
    with m.lock:
        if m.closed:
            return None
        nid, pfn, mapcount = p.mm.follow_page(addr)
        if addr < 0 or pfn < 0:
            untouched = pfn == -1 and addr >= 0
            status = int(_untouched(host, p, np.array([addr]))[0]) if untouched else -errno.EFAULT
        elif nid == node:
            status = nid
        elif mapcount > 1 and not move_all:
            status = -errno.EACCES
        elif m.engine.migrate_one(nid, pfn, node, MR_SYSCALL) is None:
            return None
        else:
            status = node
    return MoveResult(int(status != node), [status])


def _untouched(host: SyscallHost, p: Task, addrs: np.ndarray) -> np.ndarray:
    """The status of pages *addrs* with no page table entry: -ENOENT since 6.12
    (switch ``untouched_enoent`` of :mod:`offload.kernels`); before, -EFAULT for
    anonymous memory (follow_page's FOLL_DUMP) and -ENOENT for shared memory, whose
    mapping has a fault handler."""
    if host.kernel.untouched_enoent:
        return np.full(addrs.size, -errno.ENOENT, dtype=np.int64)
    return np.where(p.mm.shared_at(addrs), -errno.ENOENT, -errno.EFAULT).astype(np.int64)


def _locate(
    host: SyscallHost, p: Task, addrs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Translate *addrs*; return (status as in query mode, nid, pfn, mapcount)."""
    nid, pfn, mapcount = p.mm.follow_pages(addrs)
    status = nid.astype(np.int64)
    none = pfn == -1
    if none.any():
        status[none] = _untouched(host, p, addrs[none])
    # the zero page (PTE_ZERO, -2) and no mapping (-3): the only entries below -1
    bad = pfn < -1
    bad |= addrs < 0
    if bad.any():
        status[bad] = -errno.EFAULT
    return status, nid, pfn, mapcount


def _move_group(
    host: SyscallHost, p: Task, addrs: np.ndarray, node: int, move_all: bool
) -> np.ndarray:
    """Migrate one gathered group of entries (all to *node*); return their statuses.

    Entries naming pages of one folio move it once and share its outcome (a deliberate
    departure: the kernel gives the second of them -EBUSY, the folio being isolated).
    """
    m = host
    with m.lock:
        while True:
            status, nid, pfn, mapcount = _locate(host, p, addrs)
            present = pfn >= 0
            moving = present & (nid != node)
            if not move_all:
                shared = moving & (mapcount > 1)
                status[shared] = -errno.EACCES
                moving &= ~shared
            cand = np.flatnonzero(moving)
            if cand.size == 0:
                return status
            every = cand.size == addrs.size  # every entry moves (a region moved whole)
            cnid, cpfn = (nid, pfn) if every else (nid[cand], pfn[cand])
            heads, orders = heads_of(m.nodes, cnid, cpfn)
            keys = (cnid.astype(np.int64) << _KEY_SHIFT) | heads
            # one migration per folio, in the order of the entries that first name it;
            # base pages at increasing addresses cannot share a folio (no sort needed)
            # unless a page is mapped more than once, which only MPOL_MF_MOVE_ALL lets
            # through (a shared mapping of it twice in this process)
            distinct = keys.size < 2 or bool((keys[1:] > keys[:-1]).all())
            if not (distinct or orders.any() or (move_all and (mapcount[cand] > 1).any())):
                ca = (addrs if every else addrs[cand]) >> PAGE_SHIFT
                distinct = bool((ca[1:] > ca[:-1]).all())
            first: slice | np.ndarray = slice(None)
            if not distinct:
                srt = np.sort(keys)  # cheaper than unique's index: usually none repeats
                if (srt[1:] == srt[:-1]).any():  # some folio is named twice
                    first = np.sort(np.unique(keys, return_index=True)[1])
            fnid, fheads = cnid[first], heads[first]
            f = Folios(fnid, fheads, orders[first], np.full(fnid.size, node, dtype=np.int32))
            if m.engine.isolate(f):
                break
            m.cond.wait()  # another migration holds some of these folios
    out = m.engine.migrate(f, MR_SYSCALL)
    if (
        isinstance(first, slice)
        and len(out.folios) == len(f)
        and np.array_equal(out.folios.src_pfn, f.src_pfn)
        and np.array_equal(out.folios.src_node, f.src_node)
    ):
        # one entry per folio, outcomes in entry order: the common case, no search
        at = slice(None) if every else cand
        status[at] = np.where(out.rc == 0, node, out.rc) if out.rc.any() else node
        return status
    # each candidate entry takes the outcome of the final folio holding its page
    pk = (out.folios.src_node.astype(np.int64) << _KEY_SHIFT) | out.folios.src_pfn
    order = np.argsort(pk, kind="stable")
    pk = pk[order]
    ek = (cnid.astype(np.int64) << _KEY_SHIFT) | cpfn
    at = order[np.searchsorted(pk, ek, side="right") - 1]
    rc = out.rc[at]
    status[cand] = np.where(rc == 0, node, rc)
    if not isinstance(first, slice):
        # as do_pages_move, a later entry into a folio an earlier one took is looked up
        # again once that folio migrated: where the migration left no page there (a
        # split mapped the zero page, switch split_maps_zero_pages), it reads as such
        later = np.ones(cand.size, dtype=bool)
        later[first] = False
        if later.any():
            with m.lock:
                again = _locate(host, p, addrs[cand[later]])[0]
            gone = again < 0
            status[cand[later][gone]] = again[gone]
    return status


def _node_set(values: object, name: str) -> list[int]:
    arr = int_array(values, name)
    if ((arr < 0) | (arr >= MAX_NUMNODES)).any():
        raise oserror(errno.EINVAL, f"{name}: node ids must be in 0..{MAX_NUMNODES - 1}")
    return sorted(set(arr.tolist()))


def _remap(s: int, old: list[int], new: list[int]) -> int:
    """The kernel's node_remap(): the n-th node of old maps to the (n mod w)-th of new."""
    if s not in old or not new:
        return s
    return new[old.index(s) % len(new)]


def migrate_pages(
    host: SyscallHost, caller: Task, old_nodes: object, new_nodes: object, pid: object
) -> int:
    """migrate_pages(2) by *caller* on the task *pid* names, on *host*.

    See :meth:`offload.process.Process.migrate_pages`.

    As kernel_migrate_pages: ESRCH; EPERM without ptrace access; EPERM when *new_nodes*
    is not a subset of the nodes with memory and the caller lacks CAP_SYS_NICE; then
    *new_nodes* is intersected with the nodes with memory, and empty is EINVAL. Shared
    pages move only for a caller with CAP_SYS_NICE (MPOL_MF_MOVE_ALL).
    """
    old = _node_set(old_nodes, "old_nodes")
    new = _node_set(new_nodes, "new_nodes")
    target = _target(host, caller, pid, need_mm=False)
    m = host
    memory = set(range(len(m.nodes)))
    if not set(new) <= memory and not caller.privileged:
        raise oserror(
            errno.EPERM,
            f"new_nodes: {new} is not a subset of the nodes with "
            f"memory (0..{len(m.nodes) - 1}) and the caller lacks CAP_SYS_NICE",
        )
    asked, new = new, [n for n in new if n in memory]
    if not new:
        raise oserror(errno.EINVAL, f"new_nodes: no node with memory in {asked}")
    _check_mm(target)
    if old == new:
        return 0
    with m.migration():
        return _migrate_nodes(host, target, old, new, caller.privileged)


def _migrate_nodes(
    host: SyscallHost, target: Task, old: list[int], new: list[int], move_all: bool
) -> int:
    """do_migrate_pages(): move node by node, a destination not being a source to go."""
    busy = 0
    todo = set(old)
    while todo:
        source, dest = None, 0
        for s in sorted(todo):
            if len(old) != len(new) and s in new:
                continue
            d = _remap(s, old, new)
            if s == d:
                continue
            source, dest = s, d
            if d not in todo:
                break
        if source is None:
            break
        todo.discard(source)
        busy += _migrate_to_node(host, target, source, dest, move_all)
    return busy


def _migrate_to_node(host: SyscallHost, p: Task, source: int, dest: int, move_all: bool) -> int:
    """Move every page of *p* on node *source* to *dest*; return pages not moved."""
    m = host
    if source >= len(m.nodes):
        return 0
    with m.lock:
        while True:
            pfn = p.mm.queue_pages(source, shared=move_all)
            if pfn.size == 0:
                return 0
            node = m.nodes[source]
            heads = np.unique(node.head_of(pfn))
            nid = np.full(heads.size, source, dtype=np.int32)
            f = Folios(
                nid, heads, node.order[heads].copy(), np.full(heads.size, dest, dtype=np.int32)
            )
            if m.engine.isolate(f):
                break
            m.cond.wait()
    return m.engine.migrate(f, MR_SYSCALL).pages_failed()
