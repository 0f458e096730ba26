"""DCBM: the DMA batch migrator (driver logic), and the engines it drives.

- ``dma-threads`` (:class:`DmaThreads`): channels are CPU worker threads;
- ``cupy`` (:class:`offload.backends.dcbm.cupy_engine.CupyDcbm`): channels are CUDA streams.

Importing this package never imports CuPy.
"""

from __future__ import annotations

from offload.errors import BadArgument
from offload.migrator import Option, shipped

from .driver import Dcbm
from .engine import DmaEngine, Job
from .plan import MAX_CHANNELS, Plan, channel_bounds, plan_batch
from .threads import Faults, ThreadEngine


@shipped()
class DmaThreads(Dcbm):
    """``dma-threads``: DCBM over software channels run by CPU threads.

    The CPU-only stand-in for a DMA engine: the same driver logic, with real copies,
    on every machine. ``faults`` (a :class:`Faults`) injects errors, hangs and
    out-of-order completion for tests.
    """

    name = "dma-threads"
    options = dict(Dcbm.options)
    options["bandwidth"] = Option(
        float,
        min=0.001,
        max=10000.0,
        help="throttle to this many GB/s in all (default: unthrottled)",
    )
    options["pin"] = Option(
        bool, help="keep each channel's thread on one CPU (channel c on the c-th, round robin)"
    )

    def __init__(
        self,
        channels: int = 1,
        timeout: float = 10.0,
        coalesce: bool = True,
        bandwidth: float | None = None,
        faults: Faults | None = None,
        pin: bool = True,
    ) -> None:
        if bandwidth is not None and (
            isinstance(bandwidth, bool)
            or not isinstance(bandwidth, (int, float))
            or not 0.001 <= bandwidth <= 10000.0
        ):
            raise BadArgument(f"bandwidth: must be GB/s in [0.001, 10000], got {bandwidth!r}")
        if not isinstance(pin, bool):
            raise BadArgument(f"pin: must be true or false, got {pin!r}")
        self._threads = ThreadEngine(faults, bandwidth, pin)
        super().__init__(channels, timeout, coalesce, engine=self._threads)
        self.bandwidth = bandwidth
        self.pin = pin

    @property
    def faults(self) -> Faults:
        return self._threads.faults


__all__ = [
    "MAX_CHANNELS",
    "Dcbm",
    "DmaEngine",
    "DmaThreads",
    "Faults",
    "Job",
    "Plan",
    "ThreadEngine",
    "channel_bounds",
    "plan_batch",
]
