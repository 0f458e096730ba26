"""The Machine: nodes, processes, the migration engine and the offload registration."""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from . import hostmem, kernels
from .arrays import folio_pages
from .buddy import LAYOUTS
from .constants import NR_MAX_BATCHED_MIGRATION, PAGE_SIZE
from .counters import Vmstat
from .engine import MigrationEngine
from .errors import (
    BackendUnavailable,
    BadArgument,
    BadArgumentType,
    MachineClosed,
    SpecError,
    check_int,
    check_node,
)
from .guard import CallRunner
from .migrator import Migrator, safe_spec
from .node import NODE_KINDS, Node
from .process import Process
from .providers import SEPARATOR, Provider, parse_providers
from .rmap import Rmap
from .scheduler import parse_policy
from .sizes import parse_size

if TYPE_CHECKING:  # pragma: no cover
    from .host import Task

#: Seconds an offload (or third-party CPU path) call may take before it is abandoned:
#: the DCBM driver's completion timeout.
DEFAULT_OFFLOAD_TIMEOUT = 10.0


def parse_nodes(spec: str) -> list[tuple[str, int]]:
    """Parse ``"SIZE[,SIZE...]"`` with optional ``KIND:`` prefixes into (kind, bytes).

    Raises
    ------
    SpecError
        For an empty spec, an unknown kind, or a size that is zero or not a multiple of
        the page size.
    """
    if not isinstance(spec, str):
        raise BadArgumentType(
            f"nodes: expected a string such as '256M,256M', got {type(spec).__name__}"
        )
    out = []
    for i, part in enumerate(spec.split(",")):
        part = part.strip()
        kind, sep, size = part.partition(":")
        if not sep:
            kind, size = "dram", part
        kind = kind.strip().lower()
        if kind not in NODE_KINDS:
            raise SpecError(
                f"nodes: node {i} has unknown kind {kind!r} (kinds: {', '.join(NODE_KINDS)})"
            )
        nbytes = parse_size(size, f"nodes: node {i} size")
        if nbytes <= 0 or nbytes % PAGE_SIZE:
            raise SpecError(
                f"nodes: node {i} size must be a positive multiple of "
                f"{PAGE_SIZE} bytes, got {size!r}"
            )
        out.append((kind, nbytes))
    if not out:
        raise SpecError("nodes: at least one node is needed")
    return out


class Machine:
    """A machine with memory nodes, processes and a migration engine.

    Parameters
    ----------
    nodes : str
        ``"SIZE[,SIZE...]"``, each optionally ``"KIND:SIZE"`` (``dram``, ``device``).
    cpu : str or Migrator
        The CPU copy path (a backend spec such as ``"cpu-serial"``, or a Migrator).
    offload : str, Migrator, Provider or list of them, optional
        The offload providers registered at start. One backend spec or migrator is the
        active migrator for every reason; a list (or specs joined by ``+``) registers
        several, each a spec, a migrator or a :class:`~offload.providers.Provider`
        (limited to some migrate reasons and folio sizes; in a spec,
        ``SPEC@reasons=NAMES@sizes=MIN-MAX``). Each batch is split only over the
        providers allowed for it (:mod:`offload.multisplit`).
    policy : str
        Scheduler policy: ``cpu-only``, ``offload-only``, ``static:F``,
        ``threshold:SIZE``, ``adaptive`` (the default: each side's cost fitted online,
        every batch split to finish soonest; ``model`` is its former name) or
        ``autotune`` (measured throughputs of three ways to copy, the best kept).
    batch_pages : int
        NR_MAX_BATCHED_MIGRATION, the batch limit in base pages (kernel: 512).
    verify : bool
        After each batch copy, compare every destination with its source; a folio a
        backend marked copied but got wrong is copied again and counted against that
        backend (``verify_failures``), so a buggy plugin cannot corrupt memory.
    layout : {"fresh", "aged"}
        How the nodes' free memory starts: ``fresh`` (handed out in address order, as
        after boot) or ``aged`` (scattered free lists of every order, as on a machine
        that has run for a while; some 2 MiB blocks remain), reproducible under *seed*.
    seed : int
        Seed of the aged layout.
    prefault : bool
        Touch every frame of every host node now, so that the host's page faults on
        node memory happen here rather than during the first migrations into it.
    kernel : str, optional
        The kernel version whose behaviour the model follows where versions differ
        (``"6.1"``, ``"6.12"``, ``"7.2"``, or a release such as ``"6.12.117"``;
        default: the newest supported). The switches: :mod:`offload.kernels`.
    offload_timeout : float
        Seconds a call into the offload backend (or a third-party CPU path) may take.
        After it the call is abandoned: its folios are copied by the CPU to fresh
        destinations, the old ones held until the call returns, and the backend gets
        no new batch until then.

    Examples
    --------
    >>> with Machine(nodes="64M,64M") as m:
    ...     p = m.spawn(uid=1000)
    ...     a = p.mmap(1 << 21, node=0, folio_size=1 << 21)
    ...     p.write(a, b"hello")
    ...     p.move_pages([a], [1]).status
    [1]
    """

    def __init__(
        self,
        nodes: str = "256M,256M",
        cpu: str | Migrator = "cpu-serial",
        offload: str | Migrator | Provider | Sequence[str | Migrator | Provider] | None = None,
        policy: str = "adaptive",
        batch_pages: int = NR_MAX_BATCHED_MIGRATION,
        verify: bool = False,
        offload_timeout: float = DEFAULT_OFFLOAD_TIMEOUT,
        layout: str = "fresh",
        seed: int = 0,
        prefault: bool = False,
        kernel: str | None = None,
    ) -> None:
        self._closed = False
        hostmem.keep_temporaries()  # the batched path's temporaries are not refaulted
        #: the kernel version the model follows, and its version-specific behaviours
        self.kernel = kernels.kernel(kernel)
        if layout not in LAYOUTS:
            raise BadArgument(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
        seed = check_int(seed, "seed", minimum=0)
        self.layout = layout
        spec = parse_nodes(nodes)
        self.batch_pages = check_int(batch_pages, "batch_pages", minimum=1)
        if (
            isinstance(offload_timeout, bool)
            or not isinstance(offload_timeout, (int, float))
            or not 0 < offload_timeout <= 3600
        ):
            raise BadArgument(
                f"offload_timeout: expected seconds in (0, 3600], got {offload_timeout!r}"
            )
        self.offload_timeout = float(offload_timeout)
        if not isinstance(verify, bool):
            raise BadArgumentType(f"verify: expected bool, got {type(verify).__name__}")
        self.verify = verify
        self._policy = parse_policy(policy)
        self._owned: list[Migrator] = []
        self.cpu = self._backend(cpu, "cpu")
        try:
            providers = self._providers(offload)
        except BaseException:
            self.close()
            raise
        if any(kind == "device" for kind, _ in spec):
            from . import registry

            info = registry.info("cupy") if "cupy" in registry.names() else None
            if info is None or not info.available:
                self.close()
                why = info.reason if info is not None else "no cupy backend is registered"
                raise BackendUnavailable(f"nodes: device nodes need CuPy and a usable GPU: {why}")
        if not isinstance(prefault, bool):
            raise BadArgumentType(f"prefault: expected bool, got {type(prefault).__name__}")
        self.nodes: tuple[Node, ...] = tuple(
            Node(i, size // PAGE_SIZE, kind, layout=layout, seed=seed * 1000 + i)
            for i, (kind, size) in enumerate(spec)
        )
        if prefault:  # the host faults node memory in now, not at the first migration
            for n in self.nodes:
                if n.kind == "dram":
                    n.frames.fill(0)
        self.memory: Mapping[int, object] = MappingProxyType({n.id: n.frames for n in self.nodes})
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        #: which objects map each folio; copy-on-write sharers; the deferred split queue
        self.rmap = Rmap()
        for n in self.nodes:
            n.reclaim = functools.partial(self._reclaim, n)
        self.processes: dict[int, Process] = {}
        self._pids = itertools.count(1)
        self._vmstat = Vmstat()
        self._inflight = 0
        self._runner = CallRunner(f"offload-m{id(self) & 0xFFFF:04x}")
        self.engine = MigrationEngine(
            self.nodes,
            self.rmap,
            self._vmstat,
            self.cond,
            batch_pages=self.batch_pages,
            cpu=self.cpu,
            policy=self._policy,
            runner=self._runner,
            timeout=self.offload_timeout,
            verify=self.verify,
            memory=self.memory,
            kernel=self.kernel,
        )
        self.scheduler = self.engine.scheduler
        #: the registration of the active migrator (``register``, ``unregister``, ``stats``)
        self.offload = self.engine.offload
        for i, (backend, prov) in enumerate(providers):
            if i == 0 and prov is None:
                self.offload.register(backend, "all")
            elif prov is None:
                self.offload.add(backend)
            else:
                self.offload.add(backend, prov.mask, prov.sizes)

    # -- construction helpers --------------------------------------------------------------
    def _backend(self, value: str | Migrator, what: str) -> Migrator:
        if isinstance(value, Migrator):
            return value
        if not isinstance(value, str):
            raise BadArgumentType(
                f"{what}: expected a backend spec string or a Migrator, got {type(value).__name__}"
            )
        from . import registry

        backend = registry.create(value)
        self._owned.append(backend)
        return backend

    def _providers(self, value: object) -> list[tuple[Migrator, Provider | None]]:
        """The offload providers of *value* (see the class), their backends built."""
        if value is None:
            return []
        if isinstance(value, str):
            items: list[object] = (
                list(parse_providers(value)) if "@" in value or SEPARATOR in value else [value]
            )
        elif isinstance(value, (list, tuple)):
            items = list(value)
            if not items:
                raise BadArgument("offload: an empty list (give None for no offload)")
        else:
            items = [value]
        out: list[tuple[Migrator, Provider | None]] = []
        for item in items:
            if isinstance(item, str) and ("@" in item or SEPARATOR in item):
                parsed = parse_providers(item)
                if len(parsed) != 1:
                    raise SpecError(f"offload: {item!r} is several providers in one list item")
                item = parsed[0]
            prov = item if isinstance(item, Provider) else None
            backend = prov.backend if prov is not None else item
            if not isinstance(backend, (str, Migrator)):
                raise BadArgumentType(
                    "offload: expected a backend spec, a Migrator or a Provider, got "
                    f"{type(backend).__name__}"
                )
            out.append((self._backend(backend, "offload"), prov))
        return out

    def _reclaim(self, node: Node) -> bool:
        """Memory is short on *node*: split the folios queued for deferred split there
        and free their unmapped pages (the deferred split shrinker). The caller holds
        the machine lock. Returns whether anything was freed."""
        return self.rmap.split_deferred(node) > 0

    # -- public API ----------------------------------------------------------------------
    @property
    def policy(self) -> str:
        """The scheduler policy."""
        return self._policy.spec

    @property
    def vmstat(self) -> Mapping[str, int]:
        """Migration counters in base pages, as /proc/vmstat names them (a snapshot)."""
        with self.lock:
            return MappingProxyType(self._vmstat.snapshot())

    def vmstat_add(self, key: str, n: int) -> None:
        """Add *n* to counter *key* (the caller holds the lock)."""
        self._vmstat.add(key, n)

    @property
    def stats(self) -> dict:
        """Engine timings per phase and scheduler totals, for benchmarks."""
        return {"engine": self.engine.stats.snapshot(), "scheduler": self.scheduler.stats.as_dict()}

    def inject_alloc_failures(self, node: int, count: int) -> None:
        """Make *count* more destination allocations of migrations on *node* fail
        (-ENOMEM), as the kernel's fault injection does: each failure takes one batch's
        allocation of one folio size."""
        nid = check_node(node, "node", len(self.nodes))
        count = check_int(count, "count", minimum=0)
        with self.lock:
            self.nodes[nid].fail_allocs += count

    def audit(self) -> list[str]:
        """Check the frame accounting; return what is wrong (empty: consistent).

        Every allocated frame is mapped by some object, held in quarantine, pinned after
        its unmap, or the destination of a migration in flight; no folio is left
        isolated or under migration while no migration runs. It takes the machine's
        lock, so it is right at any moment, also while migrations copy (from another
        thread, or from inside a backend's copy).
        """
        problems = []
        with self.lock:
            used = sum(n.nr_pages - n.free_pages for n in self.nodes)
            # distinct frames: after a fork, a folio shared copy-on-write is in two
            # objects; a large folio queued for deferred split holds its unmapped pages
            keys = [
                (o.node[o.pfn >= 0].astype(np.int64) << 40) | o.pfn[o.pfn >= 0]
                for o in self.rmap.objects.values()
            ]
            keys += [
                (np.int64(nid) << 40) + h + np.arange(1 << int(self.nodes[nid].order[h]))
                for nid, h in self.rmap.deferred
            ]
            mapped = int(np.unique(np.concatenate(keys)).size) if keys else 0
            held = self.engine.stats.quarantined_pages
            # destinations of the migrations in flight (this lock is not held while
            # they copy): allocated, not mapped yet
            flying = self.engine.dst_pages
            # folios no process maps any more, freed when their last pin goes
            pinned = sum(
                int(folio_pages(n.order[np.flatnonzero((n.obj < 0) & (n.pins > 0))]).sum())
                for n in self.nodes
            )
            if used != mapped + held + pinned + flying:
                problems.append(
                    f"{used} frames allocated but {mapped} mapped (or in a folio queued for "
                    f"deferred split), {held} in quarantine, {pinned} pinned after unmap "
                    f"and {flying} destinations of migrations in flight: a leak or a "
                    "double free"
                )
            if not self._inflight and flying:
                problems.append(f"{flying} destination pages left by finished migrations")
            if not self._inflight and any((n.state != 0).any() for n in self.nodes):
                problems.append("folios left isolated or under migration")
            for n in self.nodes:
                problems += [f"node {n.id}: {x}" for x in n.buddy.check(n.order)]
                free = n.order < 0
                kept = (n.obj >= 0) | (n.pins != 0) | (n.cow != 0) | (n.state != 0)
                stale = int(kept[free].sum())
                if stale:  # a frame allocated again would start with them
                    problems.append(
                        f"node {n.id}: {stale} free frames keep an owner, pins, sharers or state"
                    )
        return problems

    @property
    def metadata_bytes(self) -> int:
        """Bytes of the model's metadata: per-frame arrays, free lists, page tables."""
        with self.lock:
            return sum(n.metadata_bytes for n in self.nodes) + sum(
                o.metadata_bytes for o in self.rmap.objects.values()
            )

    def spawn(
        self, uid: int = 1000, cap_sys_nice: bool = False, cap_sys_ptrace: bool = False
    ) -> Process:
        """Create a process with a uid and capabilities (uid 0 holds them all).

        *cap_sys_nice* allows MPOL_MF_MOVE_ALL and migrate_pages to any node;
        *cap_sys_ptrace* allows acting on another user's process.
        """
        uid = check_int(uid, "uid", minimum=0)
        for name, v in (("cap_sys_nice", cap_sys_nice), ("cap_sys_ptrace", cap_sys_ptrace)):
            if not isinstance(v, bool):
                raise BadArgumentType(f"{name}: expected bool, got {type(v).__name__}")
        with self.lock:
            p = Process(self, self.new_pid(), uid, cap_sys_nice, cap_sys_ptrace)
            self.attach(p)
        return p

    def new_pid(self) -> int:
        """A pid no task of this machine has had."""
        return next(self._pids)

    def attach(self, task: Task) -> None:
        """Count *task* among this machine's processes (``spawn`` and ``fork`` do)."""
        if not isinstance(task, Process):
            raise BadArgumentType(f"task: expected a Process, got {type(task).__name__}")
        with self.lock:
            self.processes[task.pid] = task

    def find_task(self, pid: int) -> Process | None:
        """The process with *pid*, or None."""
        return self.processes.get(pid)

    @contextmanager
    def migration(self) -> Iterator[None]:
        """Hold the machine open for one migration (``move_pages``, ``migrate_pages``).

        Raises
        ------
        MachineClosed
            When :meth:`close` has been called.
        """
        with self.lock:
            if self._closed:
                raise MachineClosed("the machine is closed: no new migrations")
            self._inflight += 1
        try:
            yield
        finally:
            with self.lock:
                self._inflight -= 1
                self.cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop new migrations, wait for those in flight, then unregister the offload
        backend and close the backends and worker threads this machine created.

        Afterwards ``move_pages`` and ``migrate_pages`` raise :class:`MachineClosed`;
        reads and writes of memory still work. A backend call abandoned at its deadline
        cannot be stopped: its worker (a daemon thread) ends when the call returns.
        """
        lock = getattr(self, "lock", None)
        if lock is None:  # the constructor failed before the machine existed
            self._closed = True
            for b in getattr(self, "_owned", []):
                b.close()
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            while self._inflight:
                self.cond.wait()
        control = self.offload
        control.close()
        for reg in control.providers:
            control.unregister(reg.migrator)
        for b in self._owned:
            b.close()
        self._runner.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        nodes = ",".join(f"{n.kind}:{n.size >> 20}M" for n in getattr(self, "nodes", ()))
        return f"Machine(nodes={nodes!r}, cpu={safe_spec(self.cpu)!r}, policy={self.policy!r})"
