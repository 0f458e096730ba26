"""Per-migrator counters, kept by folio-offload rather than by the plugin.

The kernel's ``struct migrator`` carries no state of the core's; a driver keeps its own
counters. Here too a :class:`~offload.migrator.Migrator` subclass needs no state of
ours (it may skip ``super().__init__()``): the counters the engine and the scheduler
update live in a :class:`MigratorCounters` found by the migrator's identity.
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass, field, fields


@dataclass
class MigratorCounters:
    """What the machine saw a migrator (offload or CPU path) do.

    Attributes
    ----------
    folios_migrated : int
        Folios it marked copied, the mark being trusted (its call returned in time).
    folios_failures : int
        Folios it was given and did not copy (unmarked, or its call failed).
    verify_failures : int
        Folios it marked copied but got wrong (``Machine(verify=True)``).
    stray_writes : int
        Pages outside its destinations that it changed (``Machine(verify=True)``).
    timeouts : int
        Calls abandoned at the deadline (their destinations quarantined).
    batches_skipped : int
        Batches the CPU copied because an abandoned call of it had not returned yet.
    """

    folios_migrated: int = 0
    folios_failures: int = 0
    verify_failures: int = 0
    stray_writes: int = 0
    timeouts: int = 0
    batches_skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to several counters at once, atomically."""
        with self.lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + int(v))

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (a snapshot)."""
        with self.lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lock"}


#: The migration counters of /proc/vmstat that the engine keeps, in base pages or folios.
VMSTAT_KEYS = (
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
)


class Vmstat:
    """The machine's ``/proc/vmstat`` migration counters (updated under the machine lock)."""

    def __init__(self) -> None:
        self._values = dict.fromkeys(VMSTAT_KEYS, 0)

    def add(self, key: str, n: int) -> None:
        """Add *n* to counter *key*."""
        if n:
            self._values[key] += n

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return dict(self._values)


#: id(migrator) -> (weak reference to it, or the migrator itself, its counters)
_TABLE: dict[int, tuple[object, MigratorCounters]] = {}
_TABLE_LOCK = threading.Lock()
#: (key, weak reference) of migrators that died; the table drops them on its next use.
#: A weakref callback can run inside any allocation, :func:`counters` included, so it
#: must not take the lock (it would deadlock): it only appends here.
_DEAD: list[tuple[int, weakref.ref]] = []


def counters(mig: object) -> MigratorCounters:
    """The counters of *mig*, created on first use (keyed by identity, not equality)."""
    key = id(mig)
    with _TABLE_LOCK:
        while _DEAD:
            k, r = _DEAD.pop()
            dead = _TABLE.get(k)
            if dead is not None and dead[0] is r:
                del _TABLE[k]
        hit = _TABLE.get(key)
        if hit is not None:
            old = hit[0]
            if (old() if isinstance(old, weakref.ref) else old) is mig:
                return hit[1]
        c = MigratorCounters()
        try:
            ref: object = weakref.ref(mig, functools.partial(_forget, key))
        except TypeError:  # no weak references (``__slots__`` without ``__weakref__``)
            ref = mig  # kept alive with its counters: a small, bounded leak per object
        _TABLE[key] = (ref, c)
        return c


def _forget(key: int, ref: weakref.ref) -> None:
    _DEAD.append((key, ref))  # no lock: see _DEAD


__all__ = ["VMSTAT_KEYS", "MigratorCounters", "Vmstat", "counters"]
