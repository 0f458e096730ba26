"""``Machine.offload``: registration of the offload migrators (the kernel's one, and more)."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import MachineClosed, oserror
from .migrator import Migrator, safe_name
from .providers import Registration, registration
from .reasons import format_reasons

log = logging.getLogger("offload")


class OffloadControl:
    """The registered offload providers, each with a reason mask and a folio-size range.

    :meth:`register` is the kernel's ``migrate_offload_register``: one migrator, and a
    second raises ``OSError(EBUSY)``. :meth:`add` registers a further provider beside
    it (what ``Machine(offload=[...])`` does), limited to some reasons and folio sizes.
    ``unregister`` of one that is not registered raises ``OSError(EINVAL)``; it first
    stops new batches from reaching the migrator, then waits for the copies in flight
    (the kernel's SRCU).
    """

    def __init__(self, report: Callable[[], dict] | None = None) -> None:
        """*report*: what :attr:`stats` returns (the scheduler's record)."""
        self._lock = threading.Condition()
        self._regs: tuple[Registration, ...] = ()
        self._inflight = 0
        self._last_warn = 0.0
        self._report = report
        self._closed = False

    @property
    def stats(self) -> dict:
        """The scheduler's record: batches, bytes per side, each side's measured GB/s,
        the current CPU fraction and the recent splits (CPU share of each batch)."""
        return self._report() if self._report is not None else {}

    @property
    def active(self) -> Migrator | None:
        """The first registered migrator (the one of :meth:`register`), or None."""
        regs = self._regs
        return regs[0].migrator if regs else None

    @property
    def providers(self) -> tuple[Registration, ...]:
        """Every registered provider, in registration order (a snapshot)."""
        return self._regs

    @property
    def reasons(self) -> str:
        """The reason mask of the first provider, formatted (``"all"``, ``"none"`` or
        names)."""
        return format_reasons(self.reason_mask)

    @property
    def reason_mask(self) -> int:
        """The reason mask of the first provider as a number."""
        regs = self._regs
        return regs[0].mask if regs else 0

    def register(self, migrator: Migrator, reasons: str | int = "all") -> None:
        """Make *migrator* the active one for the migrate reasons in *reasons*.

        Raises
        ------
        OSError
            EINVAL if *migrator* is not a Migrator (no ``offload_copy``) or the mask is
            bad; EBUSY if another migrator is active.
        MachineClosed
            After the machine's ``close()``.
        """
        reg = registration(migrator, reasons, None)
        with self._lock:
            self._check_open()
            if self._regs:
                raise oserror(
                    errno.EBUSY, f"migrator {safe_name(self._regs[0].migrator)!r} is already active"
                )
            self._regs = (reg,)

    def add(
        self,
        migrator: Migrator,
        reasons: str | int | tuple[str, ...] = "all",
        sizes: tuple[int | str | None, int | str | None] | str | None = None,
    ) -> None:
        """Register *migrator* as one more provider, for *reasons* and folio *sizes*
        (``(min, max)`` in bytes, either end None for no limit).

        Raises
        ------
        OSError
            EINVAL for a bad migrator, mask or range; EBUSY if *migrator* is already
            registered.
        MachineClosed
            After the machine's ``close()``.
        """
        reg = registration(migrator, reasons, sizes)
        with self._lock:
            self._check_open()
            if any(r.migrator is migrator for r in self._regs):
                raise oserror(
                    errno.EBUSY, f"migrator {safe_name(migrator)!r} is already registered"
                )
            self._regs = self._regs + (reg,)

    def _check_open(self) -> None:
        if self._closed:
            raise MachineClosed("the machine is closed: no migrator can be registered")

    def close(self) -> None:
        """Refuse every later :meth:`register` (the machine is closing)."""
        with self._lock:
            self._closed = True

    def unregister(self, migrator: Migrator) -> None:
        """Deactivate *migrator*; return once no copy of it is in flight.

        Raises
        ------
        OSError
            EINVAL if *migrator* is not registered.
        """
        with self._lock:
            left = tuple(r for r in self._regs if r.migrator is not migrator)
            if migrator is None or len(left) == len(self._regs):
                raise oserror(errno.EINVAL, "migrator: not the active migrator")
            self._regs = left
            while self._inflight:
                self._lock.wait()

    def idle(self, reason: str) -> bool:
        """Whether a batch for *reason* would find no provider (a snapshot)."""
        return not any(r.allows(reason) for r in self._regs)

    @contextmanager
    def use(self, reason: str) -> Iterator[list[Registration]]:
        """The providers for *reason* (maybe none), held against unregister."""
        with self._lock:
            regs = [r for r in self._regs if r.allows(reason)]
            if regs:
                self._inflight += 1
        try:
            yield regs
        finally:
            if regs:
                with self._lock:
                    self._inflight -= 1
                    if not self._inflight:
                        self._lock.notify_all()

    def warn(self, migrator: Migrator, exc: BaseException) -> None:
        """Rate-limited warning about a failed offload copy (as pr_warn_ratelimited)."""
        now = time.monotonic()
        if now - self._last_warn >= 5.0:
            self._last_warn = now
            log.warning(
                "offload copy by %s failed, CPU copies the batch: %r", safe_name(migrator), exc
            )
