"""``Machine.offload``: registration of the one active migrator, as the kernel does it."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import MachineClosed, oserror
from .migrator import Migrator, safe_name
from .reasons import format_reasons, parse_reasons, reason_bit

log = logging.getLogger("offload")


class OffloadControl:
    """One active migrator at a time, with a reason mask.

    ``register`` of a second migrator raises ``OSError(EBUSY)``; ``unregister`` of one
    that is not active raises ``OSError(EINVAL)``. Unregister first stops new batches
    from reaching the migrator, then waits for the copies in flight (the kernel's SRCU).
    """

    def __init__(self, report: Callable[[], dict] | None = None) -> None:
        """*report*: what :attr:`stats` returns (the scheduler's record)."""
        self._lock = threading.Condition()
        self._active: Migrator | None = None
        self._mask = 0
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
        """The active migrator, or None."""
        return self._active

    @property
    def reasons(self) -> str:
        """The active reason mask, formatted (``"all"``, ``"none"`` or names)."""
        return format_reasons(self._mask)

    @property
    def reason_mask(self) -> int:
        """The active reason mask as a number."""
        return self._mask

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
        # the class is asked, never the instance (its look-ups are plugin code)
        if not isinstance(migrator, Migrator) or not callable(
            getattr(type(migrator), "offload_copy", None)
        ):
            raise oserror(
                errno.EINVAL, f"migrator: expected a Migrator, got {type(migrator).__name__}"
            )
        mask = parse_reasons(reasons)
        with self._lock:
            if self._closed:
                raise MachineClosed("the machine is closed: no migrator can be registered")
            if self._active is not None:
                raise oserror(
                    errno.EBUSY, f"migrator {safe_name(self._active)!r} is already active"
                )
            self._active = migrator
            self._mask = mask

    def close(self) -> None:
        """Refuse every later :meth:`register` (the machine is closing)."""
        with self._lock:
            self._closed = True

    def unregister(self, migrator: Migrator) -> None:
        """Deactivate *migrator*; return once no copy of it is in flight.

        Raises
        ------
        OSError
            EINVAL if *migrator* is not the active one.
        """
        with self._lock:
            if migrator is None or self._active is not migrator:
                raise oserror(errno.EINVAL, "migrator: not the active migrator")
            self._active = None
            self._mask = 0
            while self._inflight:
                self._lock.wait()

    def idle(self, reason: str) -> bool:
        """Whether a batch for *reason* would find no active migrator (a snapshot)."""
        return self._active is None or not self._mask & reason_bit(reason)

    @contextmanager
    def use(self, reason: str) -> Iterator[Migrator | None]:
        """The active migrator for *reason* (or None), held against unregister."""
        with self._lock:
            mig = self._active if self._mask & reason_bit(reason) else None
            if mig is not None:
                self._inflight += 1
        try:
            yield mig
        finally:
            if mig is not None:
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
