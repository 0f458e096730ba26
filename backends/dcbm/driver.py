"""DCBM, the DMA Core Batch Migrator: the kernel driver's logic over any DMA engine."""

from __future__ import annotations

import threading

from offload.batch import FolioBatch
from offload.errors import BadArgument, BadArgumentType
from offload.migrator import Migrator, Option, shipped

from .engine import DmaEngine
from .plan import MAX_CHANNELS, plan_batch


@shipped()
class Dcbm(Migrator):
    """Spread each batch over DMA channels, one descriptor per folio (or coalesced run).

    Per batch: C = min(channels, folios, 16) channels, channel i taking the contiguous
    slice ``[n*i/C, n*(i+1)/C)``; every descriptor's completion is tracked on its own
    and the whole batch is waited for with a timeout. Folios whose descriptor did not
    complete in time, or failed, stay unmarked: the CPU copies them. A batch that
    finds every channel busy is refused (``batches_refused``) and the CPU copies it.

    Parameters
    ----------
    channels : int
        DMA channels, 1..16 (the ``nr_dma_chan`` knob).
    timeout : float
        Seconds to wait for a batch (the driver's 10 s).
    coalesce : bool
        One descriptor per run of folios contiguous on both sides.
    """

    name = "dcbm"
    options = {
        "channels": Option(int, min=1, max=MAX_CHANNELS, help="DMA channels (1..16)"),
        "timeout": Option(
            float,
            min=0.001,
            max=3600.0,
            help="seconds to wait for a batch before falling back",
        ),
        "coalesce": Option(bool, help="one descriptor per contiguous run"),
    }

    def __init__(
        self,
        channels: int = 1,
        timeout: float = 10.0,
        coalesce: bool = True,
        *,
        engine: DmaEngine,
    ) -> None:
        if (
            isinstance(channels, bool)
            or not isinstance(channels, int)
            or not 1 <= channels <= MAX_CHANNELS
        ):
            raise BadArgument(
                f"channels: must be an integer in 1..{MAX_CHANNELS}, got {channels!r}"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= 3600
        ):
            raise BadArgument(f"timeout: must be seconds in (0, 3600], got {timeout!r}")
        if not isinstance(engine, DmaEngine):
            raise BadArgumentType(f"engine: expected a DmaEngine, got {type(engine).__name__}")
        self.channels = channels
        self.timeout = float(timeout)
        self.coalesce = bool(coalesce)
        self.batches_refused = 0
        self.descriptors = 0
        self.timeouts = 0
        self._engine = engine
        self._opened = False
        self._free = list(range(channels))
        self._lock = threading.Lock()

    @property
    def engine(self) -> DmaEngine:
        """The engine, opened on first use (channels are acquired once, at enable)."""
        with self._lock:
            if not self._opened:
                self._engine.open(self.channels)
                self._opened = True
            return self._engine

    def can_access(self, node) -> bool:
        return self._engine.can_access(node)

    def offload_copy(self, batch: FolioBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        engine = self.engine
        want = min(self.channels, n, MAX_CHANNELS)
        with self._lock:
            got, self._free = self._free[:want], self._free[want:]
        if not got:
            self.batches_refused += 1
            return
        try:
            plan = plan_batch(batch, len(got), self.coalesce)
            self.descriptors += len(plan)
            job = engine.submit(plan, batch.memory, got)
            if not engine.wait(job, self.timeout):
                self.timeouts += 1
            # stop whatever is still running before anything is marked or returned
            engine.abort(job)
            batch.copied |= plan.folios_done(job.ok, n)
        finally:
            with self._lock:
                self._free.extend(got)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None and self._opened:
                self._engine.close()
                self._opened = False
        super().close()
