"""A batch split over several providers by their cost models (``Machine(offload=[...])``).

Every side (the CPU path, each offload provider) keeps the calls it completed and a
:class:`~offload.costmodel.CallCost` fitted to all of them, alone or beside others
(:class:`~offload.modelsplit.SideModel`).
A batch goes to the sides so that the predicted finish time, the latest side's, is
least: with side ``i`` costing ``fixed_i + var_i * s_i`` for a share ``s_i`` of the
bytes, the best shares over a set of sides finish together at

    T = (1 + sum(fixed_i / var_i)) / sum(1 / var_i)

(water filling), and the set is the prefix of the sides by fixed cost that gives the
least ``T``: a side whose fixed cost is not worth it stays idle, so a small batch is not
offloaded at all. Running several sides at once can cost more than their models say
(CPU threads that play a DMA engine share the CPUs): the median measured over predicted
time of batches that used several sides scales such predictions.

Folios that only some sides may take (a provider limited to some folio sizes, a node
it cannot reach) are split group by group, each group of folios with the same allowed
sides in turn, a side's earlier share counting as its fixed cost in the next group.

Probes: a side never measured copies one batch alone (everything it may take); once
every side is measured, one batch is split evenly over all of them, so that each side
is seen at two shares. Later, a side idle for ``REPROBE`` batches, or one whose
prediction is uncertain, gets an even share in one batch out of eight.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np

from .constants import PAGE_SIZE
from .modelsplit import REPROBE, UNCERTAIN, WINDOW, SideModel


def water_fill(fixed: np.ndarray, var: np.ndarray, k: float = 1.0) -> tuple[np.ndarray, float]:
    """The shares (summing to 1) that minimise ``max(fixed_i + var_i * s_i)`` over the
    sides given a share, and that time; *k* scales the time of a split over several
    sides (their interference).

    Examples
    --------
    >>> s, t = water_fill(np.array([0.0, 0.0]), np.array([1.0, 3.0]))
    >>> [round(x, 3) for x in s], round(t, 3)
    ([0.75, 0.25], 0.75)
    """
    fixed = np.asarray(fixed, dtype=float)
    var = np.maximum(np.asarray(var, dtype=float), 1e-15)
    order = np.argsort(fixed, kind="stable")
    best_t, best = float("inf"), np.zeros(fixed.size)
    for m in range(1, fixed.size + 1):  # over the sides (a handful), never the folios
        used = order[:m]
        t = (1.0 + float((fixed[used] / var[used]).sum())) / float((1.0 / var[used]).sum())
        share = (t - fixed[used]) / var[used]
        if (share < 0).any():
            continue
        scaled = t * (k if m > 1 else 1.0)
        if scaled < best_t:
            best_t = scaled
            best = np.zeros(fixed.size)
            best[used] = share / share.sum()
    return best, best_t


def cut(npages: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Which side (index into *shares*) each folio goes to: consecutive runs of folios,
    each side's run as close to its share of the pages as whole folios allow."""
    cum = np.cumsum(npages, dtype=np.float64)
    total = cum[-1] if cum.size else 0.0
    bounds = np.cumsum(shares) * total
    mid = cum - 0.5 * npages
    side = np.searchsorted(bounds, mid, side="right")
    used = np.flatnonzero(shares > 0)
    side = np.minimum(side, used[-1] if used.size else 0)
    return side.astype(np.int64)


class MultiSplit:
    """The split state of one batch shape over the sides seen so far (see the module)."""

    def __init__(self) -> None:
        self.sides: dict[Hashable, SideModel] = {}
        self.batches = 0
        self.probes = 0
        self.spread = False  #: whether the even split over every measured side was run
        self.log: deque[dict] = deque(maxlen=256)
        self.interference: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()

    @property
    def k(self) -> float:
        """Batches over several sides: median measured over predicted time (1 before any)."""
        if not self.interference:
            return 1.0
        return float(min(4.0, max(0.5, np.median(self.interference))))

    def choose(
        self, keys: Sequence[Hashable], allowed: np.ndarray, npages: np.ndarray, nbytes: int
    ) -> tuple[np.ndarray, float, bool]:
        """Give each folio to a side.

        Parameters
        ----------
        keys : sequence
            The sides that may take part (their identity across batches).
        allowed : numpy.ndarray
            ``(len(keys), folios)`` bool: which side may take which folio.
        npages : numpy.ndarray
            Base pages of each folio.
        nbytes : int
            Bytes of the batch.

        Returns
        -------
        who : numpy.ndarray
            Per folio, the index into *keys* of its side, -1 where no side may take it.
        predicted : float
            Predicted seconds of the batch (inf while a side taking part is unmeasured).
        probe : bool
            Whether this batch is a probe.
        """
        with self._lock:
            self.batches += 1
            models = [self.sides.setdefault(key, SideModel(pooled=True)) for key in keys]
            for m in models:
                m.refresh()
            present: np.ndarray = np.asarray(allowed.any(axis=1))
            new = [i for i, m in enumerate(models) if present[i] and m.cost is None]
            probe = False
            if new:
                # one side never measured copies alone what it may take
                lone = np.zeros_like(allowed)
                lone[new[0]] = allowed[new[0]]
                rest = ~allowed[new[0]]
                who, predicted = self._fill(models, allowed & rest, npages, lone)
                probe = True
            elif not self.spread or self._reprobe(models, present, npages, nbytes):
                self.spread = True
                who = self._even(allowed, npages)
                predicted = self._predict(models, who, npages, nbytes)
                probe = True
            else:
                who, predicted = self._fill(models, allowed, npages, None)
            if probe:
                self.probes += 1
            return who, predicted, probe

    def _reprobe(
        self, models: list[SideModel], present: np.ndarray, npages: np.ndarray, nbytes: int
    ) -> bool:
        if self.batches % 8:
            return False
        n = float(npages.size) / max(1, int(present.sum()))
        b = float(nbytes) / max(1, int(present.sum()))
        return any(
            present[i]
            and (
                m.idle >= REPROBE
                or (m.cost is not None and m.cost.relative_error(n, b) > UNCERTAIN)
            )
            for i, m in enumerate(models)
        )

    def _even(self, allowed: np.ndarray, npages: np.ndarray) -> np.ndarray:
        """Each group of folios split evenly over the sides that may take it."""
        who = np.full(npages.size, -1, dtype=np.int64)
        for sides, at in _groups(allowed):
            if sides.size:
                shares = np.full(sides.size, 1.0 / sides.size)
                who[at] = sides[cut(npages[at], shares)]
        return who

    def _fill(
        self,
        models: list[SideModel],
        allowed: np.ndarray,
        npages: np.ndarray,
        fixed_who: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        """Water-fill each group over its measured sides; *fixed_who* (a probe's lone
        side) is given first and counts as that side's load."""
        who = np.full(npages.size, -1, dtype=np.int64)
        load = np.zeros(len(models))
        nb = npages.astype(np.float64) * PAGE_SIZE
        if fixed_who is not None:
            for i in np.flatnonzero(fixed_who.any(axis=1)):
                at = np.flatnonzero(fixed_who[i])
                who[at] = i
                load[i] = models[i].predict(at.size, nb[at].sum())
        k = self.k
        for sides, at in _groups(allowed & (who < 0)):
            sides = np.array([s for s in sides if models[s].cost is not None], dtype=np.int64)
            if not sides.size:
                continue
            f_g, b_g = float(at.size), float(nb[at].sum())
            fixed = np.empty(sides.size)
            var = np.empty(sides.size)
            for j, s in enumerate(sides):
                cost = models[s].cost
                assert cost is not None
                whole = float(cost.time(f_g, b_g))
                fixed[j] = load[s] if load[s] > 0 else cost.fixed_s
                var[j] = whole - cost.fixed_s
            shares, _ = water_fill(fixed, var, k)
            who[at] = sides[cut(npages[at], shares)]
            for j, s in enumerate(sides):
                if shares[j] > 0:
                    load[s] = fixed[j] + var[j] * shares[j]
        used = int((load > 0).sum())
        t = float(load.max()) if load.size else 0.0
        return who, t * (k if used > 1 else 1.0)

    def _predict(
        self, models: list[SideModel], who: np.ndarray, npages: np.ndarray, nbytes: int
    ) -> float:
        nb = npages.astype(np.float64) * PAGE_SIZE
        times = [
            m.predict(int((who == i).sum()), float(nb[who == i].sum()))
            for i, m in enumerate(models)
            if (who == i).any()
        ]
        if not times:
            return 0.0
        return max(times) * (self.k if len(times) > 1 else 1.0)

    def learn(
        self,
        keys: Sequence[Hashable],
        calls: Sequence[tuple[int, int, float] | None],
        predicted: float,
        wall: float,
        probe: bool,
    ) -> None:
        """Record a copied batch: per side of *keys*, its (folios, bytes, seconds), or
        None where it failed (that says nothing of its speed) or took no part (folios
        0), and the whole batch's wall time."""
        with self._lock:
            used = [(k, c) for k, c in zip(keys, calls) if c is not None and c[0] > 0]
            alone = len(used) == 1
            if len(used) > 1:
                independent = max(self.sides[k].predict(c[0], c[1]) for k, c in used)
                if np.isfinite(independent) and independent > 0 and wall > 0:
                    self.interference.append(wall / independent)
            took = {k for k, _ in used}
            for key in keys:
                if key not in took:
                    self.sides[key].idle += 1
            for key, c in used:
                self.sides[key].add(*c, alone=alone)
            self.log.append(
                {
                    "sides": {str(k): c[1] for k, c in used},
                    "predicted_s": predicted if np.isfinite(predicted) else None,
                    "measured_s": wall,
                    "probe": probe,
                }
            )

    def report(self, names: dict[Hashable, str] | None = None) -> dict:
        """Per side its fitted cost; per batch the predicted and measured time."""
        names = names or {}
        with self._lock:
            log = list(self.log)
            sides = {names.get(k, str(k)): m.as_dict() for k, m in self.sides.items()}
        errs = [
            abs(x["predicted_s"] - x["measured_s"]) / x["measured_s"]
            for x in log[8:]
            if x["predicted_s"] is not None and x["measured_s"] > 0
        ]
        return {
            "batches": self.batches,
            "probes": self.probes,
            "interference": self.k,
            "sides": sides,
            "median_abs_error_after_8": float(np.median(errs)) if errs else None,
            "log": log[-64:],
        }


def _groups(allowed: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folios grouped by which sides may take them: (those sides, the folios)."""
    if allowed.shape[1] == 0:
        return []
    weights = (1 << np.arange(allowed.shape[0], dtype=np.int64))[:, None]
    sig = (allowed.astype(np.int64) * weights).sum(axis=0)
    out = []
    for s in np.unique(sig):  # over the distinct signatures (a handful)
        at = np.flatnonzero(sig == s)
        out.append((np.flatnonzero(allowed[:, at[0]]), at))
    return out


__all__ = ["MultiSplit", "cut", "water_fill"]
