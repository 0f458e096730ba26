"""Calls into backends that folio-offload does not trust: on a worker, with a deadline.

A plugin's ``offload_copy`` may raise anything (``SystemExit`` included), hang, or
return long after it was given up on. :class:`CallRunner` runs such calls on daemon
worker threads it owns, so that the migration waits for at most a deadline, sees every
exception as a failure of that call, and learns when an abandoned call finally
returns (its destinations stay quarantined until then: see the engine).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from .errors import MachineClosed


class GuardedCall:
    """One call running on a :class:`CallRunner` worker.

    Attributes
    ----------
    error : BaseException or None
        What the call raised (any exception, ``SystemExit`` and ``KeyboardInterrupt``
        included), once it is done.
    value : object
        What it returned, once it is done.
    """

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.error: BaseException | None = None
        self.value: object = None
        #: ``time.perf_counter()`` when the call returned
        self.finished_at = 0.0

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:
            self.error = exc
        self.finished_at = time.perf_counter()
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def done(self) -> bool:
        """Whether the call has returned (or raised)."""
        return self._done.is_set()

    @property
    def ok(self) -> bool:
        """Done without raising."""
        return self._done.is_set() and self.error is None

    def wait(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds; return whether the call is done."""
        return self._done.wait(timeout)

    def on_done(self, cb: Callable[[], None]) -> None:
        """Run *cb* once the call is done (now, on this thread, if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(cb)
                return
        cb()


class CallRunner:
    """A pool of daemon workers that run :class:`GuardedCall`s.

    A worker whose call hangs is simply not reused; a new one is started for the next
    call. :meth:`close` stops the idle workers; one still inside a hung call cannot be
    stopped (Python cannot kill a thread), is a daemon so that it never blocks the
    interpreter's exit, and ends by itself if the call ever returns.
    """

    def __init__(self, name: str = "offload-call") -> None:
        self._name = name
        self._idle: list[tuple[queue.SimpleQueue, threading.Thread]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._count = 0

    def start(self, fn: Callable[[], object]) -> GuardedCall:
        """Run *fn* on a worker; return its :class:`GuardedCall` at once."""
        call = GuardedCall(fn)
        with self._lock:
            if self._closed:
                raise MachineClosed("CallRunner is closed")
            if self._idle:
                q, _ = self._idle.pop()
            else:
                q = queue.SimpleQueue()
                self._count += 1
                t = threading.Thread(
                    target=self._worker, args=(q,), daemon=True, name=f"{self._name}-{self._count}"
                )
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
                t.start()
        q.put(call)
        return call

    def _worker(self, q: queue.SimpleQueue) -> None:
        while True:
            call = q.get()
            if call is None:
                return
            call._run()
            with self._lock:
                if self._closed:
                    return
                self._idle.append((q, threading.current_thread()))

    def close(self) -> None:
        """Stop the idle workers and wait for them to exit.

        A worker still inside a call (one abandoned at its deadline) exits by itself
        when the call returns.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for q, _ in idle:
            q.put(None)
        for _, t in idle:
            t.join()

    def alive(self) -> list[threading.Thread]:
        """Workers still running (a hung call keeps its worker alive)."""
        return [t for t in self._threads if t.is_alive()]


__all__ = ["CallRunner", "GuardedCall"]
