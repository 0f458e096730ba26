"""Processes: a task (pid, credentials) with its address space, and its syscalls.

:class:`Process` is the kernel's ``task_struct``; its mappings, accesses and page-table
walks are its :class:`~offload.addrspace.AddressSpace` (``p.mm``, the ``mm_struct``).
Of its machine it uses only :class:`~offload.host.TaskHost`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from . import syscalls
from .addrspace import AddressSpace, Pin
from .constants import MPOL_MF_MOVE, PAGE_SIZE
from .errors import BadArgumentType
from .syscalls import MoveResult

if TYPE_CHECKING:  # pragma: no cover
    from .host import Task, TaskHost


class Process:
    """A task: identity, credentials and an address space. Create with
    :meth:`Machine.spawn`.

    Attributes
    ----------
    pid, uid : int
        Identity; uid 0 holds every capability.
    cap_sys_nice, cap_sys_ptrace : bool
        CAP_SYS_NICE (MPOL_MF_MOVE_ALL, migrate_pages to any node) and CAP_SYS_PTRACE
        (acting on another user's process).
    mm : AddressSpace
        Its mappings and everything that walks them.
    machine : TaskHost
        The machine it runs on.
    dumpable : bool
        ``prctl(PR_SET_DUMPABLE)``: another process of the same uid may act on a
        non-dumpable one only with CAP_SYS_PTRACE (:meth:`set_dumpable`).
    exited : bool
        It called :meth:`exit` and is a zombie: its pid is still found, its memory is gone.
    """

    def __init__(
        self,
        machine: TaskHost,
        pid: int,
        uid: int,
        cap_sys_nice: bool,
        cap_sys_ptrace: bool = False,
        mm: AddressSpace | None = None,
    ) -> None:
        self.machine = machine
        self.pid = pid
        self.uid = uid
        self.cap_sys_nice = cap_sys_nice
        self.cap_sys_ptrace = cap_sys_ptrace
        self.mm = mm if mm is not None else AddressSpace(machine)
        self.dumpable = True
        self.exited = False

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, uid={self.uid}, mappings={len(self.mm)})"

    @property
    def privileged(self) -> bool:
        """uid 0 or CAP_SYS_NICE (MPOL_MF_MOVE_ALL, nodes outside the allowed set)."""
        return self.uid == 0 or self.cap_sys_nice

    def may_ptrace(self, other: Task) -> bool:
        """``__ptrace_may_access``: itself; else the same uid, or CAP_SYS_PTRACE (uid 0
        has it), and a target that is dumpable (or a zombie, whose mm is gone) unless
        the caller has CAP_SYS_PTRACE."""
        if other is self:
            return True
        cap = self.uid == 0 or self.cap_sys_ptrace
        if not (other.uid == self.uid or cap):
            return False
        return cap or other.exited or getattr(other, "dumpable", True)

    def set_dumpable(self, dumpable: bool) -> None:
        """``prctl(PR_SET_DUMPABLE, dumpable)``: a non-dumpable process can be acted on
        (move_pages, migrate_pages) by another of the same uid only with CAP_SYS_PTRACE."""
        if not isinstance(dumpable, bool):
            raise BadArgumentType(f"dumpable: expected a bool, got {type(dumpable).__name__}")
        self.dumpable = dumpable

    def exit(self) -> None:
        """exit(2): unmap everything and stay a zombie, as a task its parent has not
        reaped: its pid is still found, and move_pages / migrate_pages on it fail with
        EINVAL (``get_task_mm`` finds no mm). Calling it again does nothing."""
        if self.exited:
            return
        for start, length, _shared, _fs in self.mm.mappings:
            self.mm.munmap(start, length)
        self.exited = True

    @property
    def mappings(self) -> list[tuple[int, int, bool, int]]:
        """(start, length, shared, folio_size) of every mapping, by address."""
        return self.mm.mappings

    # -- the address space ----------------------------------------------------------------
    def mmap(
        self,
        length: int,
        node: int = 0,
        folio_size: int = PAGE_SIZE,
        shared: bool = False,
        populate: bool = True,
    ) -> int:
        """Map *length* bytes of anonymous memory; return its address.

        See :meth:`AddressSpace.mmap <offload.addrspace.AddressSpace.mmap>` for the
        parameters and errors.
        """
        return self.mm.mmap(length, node, folio_size, shared, populate)

    def share(self, addr: int, length: int, into: Process) -> int:
        """Map the shared region ``[addr, addr + length)`` into process *into*; return
        the address there (:meth:`AddressSpace.share
        <offload.addrspace.AddressSpace.share>`)."""
        if not isinstance(into, Process) or into.machine is not self.machine:
            raise BadArgumentType("into: expected a Process of the same Machine")
        return self.mm.share(addr, length, into.mm)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) of ``[addr, addr + length)`` (:meth:`AddressSpace.munmap
        <offload.addrspace.AddressSpace.munmap>`: EINVAL past the end of the address
        space, with nothing unmapped)."""
        self.mm.munmap(addr, length)

    def read(self, addr: int, n: int) -> bytes:
        """Read *n* bytes at *addr*. Untouched pages read as zeros (the zero page)."""
        return self.mm.read(addr, n)

    def read_array(self, addr: int, n: int) -> np.ndarray:
        """Like :meth:`read`, as a new uint8 numpy array."""
        return self.mm.read_array(addr, n)

    def write(self, addr: int, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Write *data* at *addr*, allocating folios on first touch."""
        self.mm.write(addr, data)

    def pin(self, addr: int) -> Pin:
        """Take an extra reference on the folio at *addr* (faulting it in if needed)."""
        return self.mm.pin(addr)

    def fork(self) -> Process:
        """fork(2): a child with the same credentials and a copy of every mapping.

        Private pages are shared copy-on-write: until either process writes a page, the
        folio has two mappings (-EACCES under MPOL_MF_MOVE; MPOL_MF_MOVE_ALL moves it
        for both). Shared mappings are shared; the child has no page table entries for
        them until it touches a page, as fork(2) copies none for shared memory.
        """
        m = self.machine
        with m.lock:
            child = Process(m, m.new_pid(), self.uid, self.cap_sys_nice, self.cap_sys_ptrace)
            child.mm = self.mm.dup()
            m.attach(child)
        return child

    # -- syscalls -----------------------------------------------------------------------
    def move_pages(
        self,
        pages: Iterable[int],
        nodes: Iterable[int] | None = None,
        flags: int = MPOL_MF_MOVE,
        pid: int = 0,
    ) -> MoveResult:
        """move_pages(2): move (or, with ``nodes=None``, locate) the pages at *pages*.

        Returns ``MoveResult(ret, status)``; see docs/api.md for every status.
        """
        return syscalls.move_pages(self.machine, self, pages, nodes, flags, pid)

    def migrate_pages(
        self, old_nodes: Iterable[int], new_nodes: Iterable[int], pid: int = 0
    ) -> int:
        """migrate_pages(2): move every page on *old_nodes* to *new_nodes*.

        Returns the number of pages not moved.
        """
        return syscalls.migrate_pages(self.machine, self, old_nodes, new_nodes, pid)


__all__ = ["MoveResult", "Pin", "Process"]
