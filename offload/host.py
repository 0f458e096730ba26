"""What a task, its address space and the syscalls use of the machine that hosts them.

Small protocols, so that :mod:`offload.addrspace`, :mod:`offload.process` and
:mod:`offload.syscalls` name what they need instead of the whole
:class:`~offload.machine.Machine` (which composes them, and satisfies every one).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .engine import MigrationEngine
    from .kernels import Kernel
    from .node import Node
    from .rmap import Rmap


class MemoryHost(Protocol):
    """The memory an address space lives in: nodes, the lock, the reverse map."""

    @property
    def nodes(self) -> Sequence[Node]: ...

    @property
    def memory(self) -> Mapping[int, Any]: ...

    @property
    def lock(self) -> threading.RLock: ...

    @property
    def cond(self) -> threading.Condition: ...

    @property
    def rmap(self) -> Rmap: ...

    @property
    def kernel(self) -> Kernel: ...


class TaskMM(Protocol):
    """The page-table walks the syscalls make in a task's address space."""

    def follow_pages(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def follow_page(self, addr: int) -> tuple[int, int, int]: ...

    def queue_pages(self, node: int, shared: bool) -> np.ndarray: ...

    def shared_at(self, addrs: np.ndarray) -> np.ndarray: ...


class Task(Protocol):
    """What the syscalls need of a task (:class:`~offload.process.Process`)."""

    @property
    def pid(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def privileged(self) -> bool: ...

    @property
    def mm(self) -> TaskMM: ...

    @property
    def exited(self) -> bool: ...

    def may_ptrace(self, other: Task) -> bool: ...


class SyscallHost(MemoryHost, Protocol):
    """What move_pages and migrate_pages use of the machine: its tasks, its migration
    engine, and the hold that keeps it open for one migration."""

    @property
    def engine(self) -> MigrationEngine: ...

    @property
    def closed(self) -> bool: ...

    def find_task(self, pid: int) -> Task | None: ...

    def migration(self) -> AbstractContextManager[None]: ...


class TaskHost(SyscallHost, Protocol):
    """What a task uses of its machine: the syscalls' host, and a new pid for a fork."""

    def new_pid(self) -> int: ...

    def attach(self, task: Task) -> None: ...


__all__ = ["MemoryHost", "SyscallHost", "Task", "TaskHost", "TaskMM"]
