"""The ``model`` policy: each batch split by a cost model of each side, fitted online.

Each side (the CPU path, the offload engine) keeps the calls it completed, in a window
(folios, bytes, seconds), and a :class:`~offload.costmodel.CallCost` fitted to them
robustly (``fixed + per_folio * folios + bytes / bandwidth``), from the calls it made
alone where there are any. Running both at once can cost more than either model says
(on a machine where the offload engine is CPU threads, they share the CPUs): the
measured over predicted time of split batches, its median, scales the prediction of a
split. A batch goes where the predicted finish time is least: all on the CPU, all
offloaded, or split so that both sides are predicted to finish together; a side whose
fixed cost is not worth it is left idle (so a small batch is not offloaded at all). While a side's model is missing or uncertain, batches probe it: the first three
batches take the three ways in turn (every side measured at two shares), and later a
side left idle, or whose prediction error is large, is probed once every
``REPROBE`` batches. Every batch's predicted and measured time is kept.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from .costmodel import CallCost, fit_calls

#: calls kept per side
WINDOW = 48
#: a side idle this many batches is probed again (its speed may have changed)
REPROBE = 64
#: a fitted side whose relative standard error at the batch is above this is probed
UNCERTAIN = 0.25
#: a side is refitted after each of its first 4 calls, then every REFIT calls
REFIT = 16


class SideModel:
    """One side's completed calls, and their fitted cost: from the calls it made alone
    where there are any (the other side idle), else from those it made beside it."""

    def __init__(self) -> None:
        self.alone: deque[tuple[int, int, float]] = deque(maxlen=WINDOW)
        self.beside: deque[tuple[int, int, float]] = deque(maxlen=WINDOW)
        self.cost: CallCost | None = None
        self.idle = 0  #: batches since this side last copied
        self._new = 0  #: calls added since the last fit

    @property
    def calls(self) -> int:
        return len(self.alone) + len(self.beside)

    def add(self, folios: int, nbytes: int, seconds: float, alone: bool) -> None:
        if folios > 0 and nbytes > 0 and seconds > 0:
            (self.alone if alone else self.beside).append((folios, nbytes, seconds))
            self._new += 1
        self.idle = 0

    def refresh(self) -> None:
        """Refit where new calls came: after each of the first 4 calls, then once every
        REFIT (a fit costs a few hundred microseconds; a batch of 4 KiB folios, two)."""
        if not self._new or (self.cost is not None and self.calls > 4 and self._new < REFIT):
            return
        calls = self.alone or self.beside
        f, b, t = (np.array(x, dtype=float) for x in zip(*calls))
        self.cost = fit_calls(f, b, t)
        self._new = 0

    def predict(self, folios: float, nbytes: float) -> float:
        """Seconds for a share, 0 for none; inf where no model is fitted yet."""
        if folios <= 0:
            return 0.0
        if self.cost is None:
            return float("inf")
        return float(self.cost.time(folios, nbytes))

    def as_dict(self) -> dict | None:
        return None if self.cost is None else self.cost.as_dict()


def median_error(log: list[dict]) -> float | None:
    """The median |predicted - measured| / measured over the batches of *log* that were
    predicted (None when none was)."""
    errs = [
        abs(x["predicted_s"] - x["measured_s"]) / x["measured_s"]
        for x in log
        if x["predicted_s"] is not None and x["measured_s"] > 0
    ]
    return float(np.median(errs)) if errs else None


class ModelSplit:
    """The ``model`` policy's state for one batch shape (see the module)."""

    def __init__(self) -> None:
        self.cpu = SideModel()
        self.off = SideModel()
        self.batches = 0
        self.probes = 0
        self.log: deque[dict] = deque(maxlen=256)
        #: measured over predicted time of split batches: what running both sides at
        #: once costs beyond their own models (they share CPUs, memory bandwidth)
        self.interference: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()

    @property
    def k(self) -> float:
        """The split batches' slowdown over their prediction (1 before any was seen)."""
        if not self.interference:
            return 1.0
        return float(min(4.0, max(0.5, np.median(self.interference))))

    def choose(self, folios: int, nbytes: int) -> tuple[float, float, bool]:
        """This batch's CPU share of the bytes, its predicted seconds, and whether it is a
        probe."""
        with self._lock:
            self.batches += 1
            self.cpu.refresh()
            self.off.refresh()
            first = (1.0, 0.0, 0.5)  # all CPU, all offloaded, half each: both sides, two shares
            if self.batches <= len(first):
                self.probes += 1
                f = first[self.batches - 1]
                return f, self._predict(f, folios, nbytes), True
            best_f, best_t = 1.0, self._predict(1.0, folios, nbytes)
            balance = self._balance(folios, nbytes)
            for f in (0.0,) if balance is None else (0.0, balance):
                t = self._predict(f, folios, nbytes)
                if t < best_t:
                    best_f, best_t = f, t
            # a side not fitted, idle for long, or too uncertain where it would be used
            # is measured again, at most one batch in eight
            probe = None
            if self.off.cost is None or self.off.idle >= REPROBE:
                probe = 0.0
            elif self.cpu.cost is None or self.cpu.idle >= REPROBE:
                probe = 1.0
            elif (
                best_f not in (0.0, 1.0)
                and max(
                    self.cpu.cost.relative_error(folios * best_f, nbytes * best_f),
                    self.off.cost.relative_error(folios * (1 - best_f), nbytes * (1 - best_f)),
                )
                > UNCERTAIN
            ):
                probe = 0.5
            if probe is not None and probe != best_f and self.batches % 8 == 0:
                self.probes += 1
                return probe, self._predict(probe, folios, nbytes), True
            return best_f, best_t, False

    def _predict(self, f: float, folios: int, nbytes: int, shared: bool = True) -> float:
        """Predicted finish of a batch with CPU share *f*: the later side, times the
        interference seen when both sides run (with *shared*)."""
        t = max(
            self.cpu.predict(folios * f, nbytes * f),
            self.off.predict(folios * (1 - f), nbytes * (1 - f)),
        )
        return t * self.k if shared and 0.0 < f < 1.0 else t

    def _balance(self, folios: int, nbytes: int) -> float | None:
        """The CPU share at which both sides are predicted to finish together, or None."""
        c, o = self.cpu.cost, self.off.cost
        if c is None or o is None:
            return None
        ac = float(c.time(folios, nbytes)) - c.fixed_s  # the part that scales with the share
        ao = float(o.time(folios, nbytes)) - o.fixed_s
        if ac + ao <= 0:
            return None
        # fc + ac f = fo + ao (1 - f)
        f = (o.fixed_s + ao - c.fixed_s) / (ac + ao)
        return f if 0.0 < f < 1.0 else None

    def learn(
        self,
        f: float,
        predicted: float,
        cpu: tuple[int, int, float],
        off: tuple[int, int, float] | None,
        wall: float,
        probe: bool,
    ) -> None:
        """Record a copied batch: each side's (folios, bytes, seconds) (*off* None when
        the offload failed: it says nothing of its speed) and the whole batch's wall time."""
        with self._lock:
            split = 0.0 < f < 1.0
            if split and off is not None:
                independent = self._predict(f, cpu[0] + off[0], cpu[1] + off[1], shared=False)
                if np.isfinite(independent) and independent > 0 and wall > 0:
                    self.interference.append(wall / independent)
            if cpu[0]:
                self.cpu.add(*cpu, alone=not split)
            else:
                self.cpu.idle += 1
            if off is not None and off[0]:
                self.off.add(*off, alone=not split)
            else:
                self.off.idle += 1
            self.log.append(
                {
                    "cpu_fraction": f,
                    "predicted_s": predicted if np.isfinite(predicted) else None,
                    "measured_s": wall,
                    "probe": probe,
                }
            )

    def report(self) -> dict:
        with self._lock:
            log = list(self.log)
        return {
            "batches": self.batches,
            "probes": self.probes,
            "interference": self.k,
            "cpu": self.cpu.as_dict(),
            "offload": self.off.as_dict(),
            "median_abs_error_after_8": median_error(log[8:]),
            "log": log[-64:],
        }


__all__ = ["ModelSplit", "SideModel", "median_error"]
