"""``emu``: an emulated DMA engine of known speed, for what-ifs and scheduler tests.

DCBM's driver logic over channels that really move every byte (CPU threads, as
``dma-threads``) and then complete no earlier than a model of the engine says: a
channel given ``k`` descriptors of ``nbytes`` bytes in all completes

    setup_us + per_folio_us * k + nbytes / (per-channel bandwidth)

after the batch was issued, where the per-channel bandwidth is ``gbps``, or
``max_gbps / C`` when ``C`` busy channels share an engine of ``max_gbps``. Where the
CPU copy itself takes longer than that, the channel completes when its copy does: an
emulated engine is never faster than the model, and never faster than the CPUs that
play it. Its results are emulated, not measured: every table and JSON document marks
its rows so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from offload.constants import PAGE_SIZE
from offload.errors import BadArgument
from offload.migrator import Option, shipped

from .driver import Dcbm
from .engine import DONE
from .threads import ThreadEngine, _copy, _span, _ThreadJob


@dataclass(frozen=True)
class EngineModel:
    """The emulated engine's speed (see the module)."""

    gbps: float
    setup_us: float = 0.0
    per_folio_us: float = 0.0
    max_gbps: float | None = None

    def seconds(self, descriptors: int, nbytes: int, busy_channels: int) -> float:
        """When a channel's slice completes, in seconds after the batch was issued."""
        bw = self.gbps
        if self.max_gbps is not None:
            bw = min(bw, self.max_gbps / max(1, busy_channels))
        return (self.setup_us + self.per_folio_us * descriptors) * 1e-6 + nbytes / (bw * 1e9)


class EmuEngine(ThreadEngine):
    """Thread channels that complete when :class:`EngineModel` says, not before."""

    def __init__(self, model: EngineModel) -> None:
        super().__init__()
        self.model = model

    def _run(self, job: _ThreadJob, idx: np.ndarray, memory) -> None:
        plan = job.plan
        copied = np.zeros(idx.size, dtype=np.int8)
        span = _span(idx) if job.runs is not None else None
        if job.runs is not None and span is not None:
            job.runs.run(*span, copied, job.stop)
        elif not job.cancelled.is_set():
            _copy(plan, idx, memory)
            copied[:] = 1
        nbytes = int(plan.npages[idx].sum()) * PAGE_SIZE
        due = job.issued_at + self.model.seconds(idx.size, nbytes, plan.channels)
        # a descriptor completes at the model's time: an abort before it leaves it pending
        if job.cancelled.wait(max(0.0, due - time.perf_counter())):
            return
        done = idx[copied == 1]
        with job.cond:
            job.status[done] = DONE
            job.left -= done.size
            job.cond.notify_all()


@shipped()
class Emu(Dcbm):
    """``emu``: DCBM over an emulated engine of known speed.

    Parameters
    ----------
    channels : int
        DMA channels, 1..16.
    gbps : float
        Bandwidth of one channel, GB/s.
    setup_us : float
        Microseconds per batch and channel before the first byte.
    per_folio_us : float
        Microseconds per descriptor.
    max_gbps : float, optional
        Bandwidth of the whole engine, shared by the busy channels.
    timeout, coalesce
        As ``dma-threads``.
    """

    name = "emu"
    emulated = True
    options = dict(Dcbm.options)
    options["gbps"] = Option(float, min=0.001, max=10000.0, help="GB/s of one channel")
    options["setup_us"] = Option(float, min=0.0, max=1e6, help="us per batch and channel")
    options["per_folio_us"] = Option(float, min=0.0, max=1e6, help="us per descriptor")
    options["max_gbps"] = Option(
        float, min=0.001, max=10000.0, help="GB/s of the whole engine (default: no limit)"
    )

    def __init__(
        self,
        channels: int = 1,
        gbps: float = 10.0,
        setup_us: float = 0.0,
        per_folio_us: float = 0.0,
        max_gbps: float | None = None,
        timeout: float = 10.0,
        coalesce: bool = True,
    ) -> None:
        for key, value, lo, hi in (
            ("gbps", gbps, 0.001, 10000.0),
            ("setup_us", setup_us, 0.0, 1e6),
            ("per_folio_us", per_folio_us, 0.0, 1e6),
            ("max_gbps", max_gbps, 0.001, 10000.0),
        ):
            if value is None and key == "max_gbps":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not np.isfinite(value)
                or not lo <= value <= hi
            ):
                raise BadArgument(f"{key}: must be a number in [{lo}, {hi}], got {value!r}")
        self.model = EngineModel(float(gbps), float(setup_us), float(per_folio_us), max_gbps)
        super().__init__(channels, timeout, coalesce, engine=EmuEngine(self.model))

    # the model's parameters, under the names of the options (``spec`` recreates it)
    gbps = property(lambda self: self.model.gbps)
    setup_us = property(lambda self: self.model.setup_us)
    per_folio_us = property(lambda self: self.model.per_folio_us)
    max_gbps = property(lambda self: self.model.max_gbps)


__all__ = ["Emu", "EmuEngine", "EngineModel"]
