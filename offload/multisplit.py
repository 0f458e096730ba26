"""Each batch split over the CPU path and the offload providers by their cost models:
policy ``adaptive``, and several providers (``Machine(offload=[...])``).

Every side (the CPU path, each offload provider) keeps the calls it completed and a
:class:`~offload.costmodel.CallCost` (``fixed + per_folio * folios + bytes /
bandwidth``) fitted robustly to the calls it made alone (:class:`SideModel`). A batch
goes to the sides so that the predicted finish time, the latest side's, is least: with
side ``i`` costing ``fixed_i + var_i * s_i`` for a share ``s_i`` of the bytes, the best
shares over a set of sides finish together at

    T = (1 + sum(fixed_i / var_i)) / sum(1 / var_i)

(water filling), over the set of sides that gives the least ``T``: a side whose fixed
cost is not worth it stays idle, so a small batch is not offloaded at all. A home side
(the CPU path) keeps a batch it may take whole unless another choice is predicted
faster by more than ``HOME_MARGIN`` (a near tie is decided by the models' error). Running
several sides at once can cost more than their models say (CPU threads that play a DMA
engine share the CPUs, and all share the memory bus): the median measured over
predicted time of earlier batches over as many sides scales such predictions, so that
one fast side alone can win over a split. (A fit over the calls made beside others
would fold that slowdown into each side; on two shared cores it finds calls whose time
does not grow with their bytes.)

Folios that only some sides may take (a provider limited to some folio sizes, a node it
cannot reach) are split group by group, each group of folios with the same allowed
sides in turn, a side's earlier share counting as its fixed cost in the next group.

Seeds: a side calibrated when it was first used (:mod:`offload.calibrate`) starts from
that cost and is not probed; the seed stands until the side has copied alone.

Probes (a side with no seed): each side copies alone, first half of what it may take of
a batch as a warm-up
(a first call pays for threads, pools and caches that start cold: it is not recorded),
then all of it, then half of it again (what a probe leaves is the CPU fallback's, after
it), so that its fixed cost and its bandwidth are told apart: three probe batches per
side, once. Later, a side idle for ``REPROBE`` batches copies one batch alone (at most
one batch in eight): its speed, or the others', may have changed. Every batch's
predicted and measured time is kept.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import numpy as np

from .constants import PAGE_SIZE
from .costmodel import CallCost, fit_calls

#: calls kept per side
WINDOW = 48
#: a side seeded by the calibration and predicted alone within this factor of the best
#: lone side (or of a split in doubt) is checked by one batch of its own (one such check
#: per batch shape)
SEED_CHECK = 1.3
#: a split is in doubt where its measured over predicted time (the interference factor)
#: is off 1 by more than this
SPLIT_DOUBT = 0.2
#: a side idle this many batches is probed again (its speed may have changed)
REPROBE = 64
#: a side is refitted after each of its first 4 calls, then every REFIT calls, and at
#: once after two calls alone in a row that took SURPRISE (relative) more or less than
#: predicted
REFIT = 16
SURPRISE = 0.2
#: ...but a routine refit waits until the side has copied for this many times the
#: last fit's own duration, so that fitting costs at most about 0.3% of the copying (a
#: change of speed is a surprise, refitted at once)
FIT_SHARE = 300.0
#: a steady bias too small to surprise (a fit that still holds the slower first calls):
#: where the last DRIFT_CALLS calls alone took on average (the least and the most left
#: out) more than DRIFT (relative) more or less than predicted, the fitted cost is
#: scaled by that average at once, which costs a few microseconds, not a fit
DRIFT = 0.1
DRIFT_CALLS = 8


class SideModel:
    """One side's completed calls, and their fitted cost: from the calls it made alone
    where there are any (the other sides idle), else from those it made beside them."""

    def __init__(self) -> None:
        self.alone: deque[tuple[int, int, float]] = deque(maxlen=WINDOW)
        self.beside: deque[tuple[int, int, float]] = deque(maxlen=WINDOW)
        self.cost: CallCost | None = None
        self.idle = 0  #: batches since this side last copied
        self._new = 0  #: calls added since the last fit
        self._missed = 0  #: calls alone in a row that missed their prediction
        self.version = 0  #: fits made (a split chosen from older ones is stale)
        self.seed: CallCost | None = None  #: the calibration's cost, until calls alone
        self._copied = 0.0  #: seconds of calls added since the last fit
        self._fit_s = 0.0  #: how long the last fit took
        self._surprised = False
        #: measured over predicted time of the last calls alone
        self._recent: deque[float] = deque(maxlen=DRIFT_CALLS)

    @property
    def calls(self) -> int:
        """Calls kept, alone and beside others."""
        return len(self.alone) + len(self.beside)

    def add(self, folios: int, nbytes: int, seconds: float, alone: bool) -> None:
        """Keep a completed call (*alone*: no other side copied in its batch)."""
        if folios > 0 and nbytes > 0 and seconds > 0:
            (self.alone if alone else self.beside).append((folios, nbytes, seconds))
            self._new += 1
            self._copied += seconds
            if alone and self.cost is not None:
                predicted = float(self.cost.time(folios, nbytes))
                missed = abs(seconds - predicted) > SURPRISE * predicted
                self._missed = self._missed + 1 if missed else 0
                if self._missed >= 2:  # twice in a row: not one noisy call
                    self._new, self._missed = max(self._new, REFIT), 0
                    self._surprised = True
                elif predicted > 0:
                    self._drift(seconds / predicted)
        self.idle = 0

    def _drift(self, ratio: float) -> None:
        """Keep a call's measured over predicted time; scale the cost by their trimmed
        mean where the last DRIFT_CALLS of them are off by more than DRIFT."""
        recent = self._recent
        recent.append(ratio)
        if len(recent) < DRIFT_CALLS or self.cost is None:
            return
        factor = (sum(recent) - min(recent) - max(recent)) / (len(recent) - 2)
        if abs(factor - 1.0) > DRIFT:
            self.cost = self.cost.scaled(factor)
            self.version += 1
            recent.clear()

    def refresh(self) -> None:
        """Refit where new calls came: after each of the first 4 calls, then once every
        REFIT once the side has copied for FIT_SHARE times the last fit's duration, and
        at once after a surprise (a fit costs a few hundred microseconds, a batch of
        4 KiB folios one or two milliseconds)."""
        if not self._new:
            return
        routine = self.cost is not None and self.calls > 4 and not self._surprised
        if routine and (self._new < REFIT or self._copied < FIT_SHARE * self._fit_s):
            return
        # a seed from the calibration stands until the side has copied alone
        calls = self.alone or (self.beside if self.seed is None else None)
        if not calls:
            return
        start = time.perf_counter()
        f, b, t = (np.array(x, dtype=float) for x in zip(*calls))
        self.cost = expected_cost(fit_calls(f, b, t), f, b, t)
        self._fit_s = time.perf_counter() - start
        self._new, self._copied, self._surprised = 0, 0.0, False
        self._recent.clear()  # they were predicted by the old fit
        self.version += 1

    def predict(self, folios: float, nbytes: float) -> float:
        """Seconds for a share, 0 for none; inf where no model is fitted yet."""
        if folios <= 0:
            return 0.0
        if self.cost is None:
            return float("inf")
        return float(self.cost.time(folios, nbytes))

    def as_dict(self) -> dict | None:
        """The fitted cost for JSON (None before any fit)."""
        return None if self.cost is None else self.cost.as_dict()


#: the share of calls at each end that the expected cost leaves out
TRIM = 0.1


def expected_cost(cost: CallCost, f: np.ndarray, b: np.ndarray, t: np.ndarray) -> CallCost:
    """*cost* (a robust fit, which follows the usual call) scaled to what calls cost on
    average: the trimmed mean of measured over predicted time.

    A side whose calls are bimodal (some start late: a channel thread woken on a busy
    CPU) costs more on average than its usual call; a split chosen on the usual call
    would keep giving it batches that come back late. The trim leaves out a lone
    disturbed call, as the fit does.
    """
    pred = np.asarray(cost.time(f, b), dtype=float)
    ok = pred > 0
    if ok.sum() < 4:
        return cost
    ratio = np.sort(t[ok] / pred[ok])
    cut = int(ratio.size * TRIM)
    factor = float(ratio[cut : ratio.size - cut].mean())
    return cost.scaled(factor) if abs(factor - 1.0) > 0.02 else cost


def median_error(log: list[dict]) -> float | None:
    """The median |predicted - measured| / measured over the batches of *log* that were
    predicted (None when none was)."""
    errs = [
        abs(x["predicted_s"] - x["measured_s"]) / x["measured_s"]
        for x in log
        if x["predicted_s"] is not None and x["measured_s"] > 0
    ]
    return float(np.median(errs)) if errs else None


#: Up to this many sides every set of them is tried (2**n - 1 sets).
EXACT_SIDES = 6


def water_fill(
    fixed: np.ndarray, var: np.ndarray, k: Callable[[int], float] | float = 1.0
) -> tuple[np.ndarray, float]:
    """The shares (summing to 1) that minimise ``max(fixed_i + var_i * s_i)`` over the
    sides given a share, and that time.

    *k* scales the time of a split over ``m > 1`` sides (their interference): a number,
    or a function of ``m``. Every set of sides is tried where there are at most
    ``EXACT_SIDES`` (with interference, one fast side alone can beat any split), else
    each side alone and the prefixes of the sides by fixed cost (the best sets when
    nothing interferes).

    Examples
    --------
    >>> s, t = water_fill(np.array([0.0, 0.0]), np.array([1.0, 3.0]))
    >>> [round(float(x), 3) for x in s], round(t, 3)
    ([0.75, 0.25], 0.75)
    """
    fixed_l = [float(x) for x in np.asarray(fixed, dtype=float)]
    var_l = [max(float(x), 1e-15) for x in np.asarray(var, dtype=float)]
    n = len(fixed_l)
    factor = k if callable(k) else (lambda m, c=float(k): c)
    if n <= EXACT_SIDES:
        sets = [[i for i in range(n) if mask >> i & 1] for mask in range(1, 1 << n)]
    else:
        order = sorted(range(n), key=lambda i: fixed_l[i])
        sets = [[i] for i in range(n)] + [order[:m] for m in range(2, n + 1)]
    best_t, best_set, best_share = float("inf"), [0], [1.0]
    for used in sets:  # over sets of sides (a handful), never the folios
        inv = sum(1.0 / var_l[i] for i in used)
        t = (1.0 + sum(fixed_l[i] / var_l[i] for i in used)) / inv
        share = [(t - fixed_l[i]) / var_l[i] for i in used]
        if min(share) < 0:
            continue
        scaled = t * (factor(len(used)) if len(used) > 1 else 1.0)
        if scaled < best_t:
            best_t, best_set, best_share = scaled, used, share
    out = np.zeros(n)
    total = sum(best_share)
    for i, sh in zip(best_set, best_share):
        out[i] = sh / total
    return out, best_t


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


class Choice(NamedTuple):
    """What :meth:`MultiSplit.choose` gives a batch."""

    #: per folio, the index of its side; -1 where none may take it or a probe leaves it
    #: (the CPU fallback copies it after the batch copy); may be read-only
    who: np.ndarray
    #: predicted seconds of the batch (inf while a side taking part is unmeasured)
    predicted: float
    #: whether this batch is a probe
    probe: bool
    #: the side that takes every folio, or -1 (several, or some folios left)
    lone: int


#: the home side keeps a batch it may take whole unless another choice is predicted
#: faster by more than this (relative): within the models' error the home side, which
#: needs no hand-off, is kept, which costs at most this much where the models are right
HOME_MARGIN = 0.02


class MultiSplit:
    """The split state of one batch shape over the sides seen so far (see the module).

    Parameters
    ----------
    home : hashable, optional
        The key of the side that keeps near ties (the CPU path: it copies on the calling
        thread, with nothing handed over): another choice must be predicted faster than
        it alone by more than ``HOME_MARGIN``.
    """

    def __init__(self, home: Hashable | None = None) -> None:
        self.home = home
        self.sides: dict[Hashable, SideModel] = {}
        self.batches = 0
        self.probes = 0
        #: per side: 0 never probed, 1 warmed up, 2 probed on the whole batch, 3 on half
        #: (or calibrated), 4 its calibration checked by a batch of its own
        self.stage: dict[Hashable, int] = {}
        self._warming: set[Hashable] = set()  #: sides whose next call is not recorded
        self._last: tuple | None = None  #: the last split chosen, and what it was for
        #: the sides (and which of them take part) for which nothing is left to probe
        #: but a side left idle (stages only rise, so this stays true)
        self._quiet: tuple | None = None
        self.log: deque[dict] = deque(maxlen=256)
        #: per number of sides of a split: measured over predicted times
        self.interference: dict[int, deque[float]] = {}
        self._k: dict[int, float] = {}  #: their medians, bounded to [0.5, 4]
        self._lock = threading.Lock()

    def k(self, sides: int) -> float:
        """Batches over *sides* sides: the median measured over predicted time (that of
        the nearest fewer sides seen, or 1, before any)."""
        for m in range(sides, 1, -1):
            if m in self._k:
                return self._k[m]
        return 1.0

    def choose(
        self,
        keys: Sequence[Hashable],
        allowed: np.ndarray,
        npages: np.ndarray,
        nbytes: int,
        seeds: Sequence[CallCost | None] | None = None,
    ) -> Choice:
        """Give each folio to a side.

        Parameters
        ----------
        keys : sequence
            The sides that may take part (their identity across batches).
        allowed : numpy.ndarray
            ``(len(keys), folios)`` bool: which side may take which folio; or
            ``(len(keys),)``: which sides take every folio (the others none).
        npages : numpy.ndarray
            Base pages of each folio.
        nbytes : int
            Bytes of the batch.
        seeds : sequence, optional
            Per side, the cost a calibration measured (None: none): a side with one is
            not probed; its seed stands until it has copied alone.

        Returns
        -------
        Choice
            Each folio's side (an array the caller must not change: batches of one
            shape in a run share it), the predicted seconds, whether the batch is a
            probe, and the one side taking every folio (-1 where there is none).
        """
        with self._lock:
            self.batches += 1
            sides = self.sides
            models = [sides[k] if k in sides else sides.setdefault(k, SideModel()) for k in keys]
            for i, m in enumerate(models):
                seed = seeds[i] if seeds is not None else None
                if seed is not None and m.cost is None and not self.stage.get(keys[i]):
                    m.seed = m.cost = seed
                    m.version += 1
                    self.stage[keys[i]] = 3  # calibrated: no probe
                m.refresh()
            present: np.ndarray = allowed if allowed.ndim == 1 else np.asarray(allowed.any(axis=1))

            # computed only where needed (by the check of a seed, or for a batch that is
            # no probe), and once: _plan keeps its last answer
            def plan() -> tuple[np.ndarray, float, int, int]:
                return self._plan(keys, models, allowed, npages, nbytes)

            side = self._probe_side(keys, models, present, npages, nbytes, plan)
            if side is None:
                who, predicted, _, lone = plan()
                return Choice(who, predicted, False, lone)
            # a probe: one side alone, on all it may take or (its second) on half of that
            i, frac = side
            at = np.arange(npages.size) if allowed.ndim == 1 else np.flatnonzero(allowed[i])
            if frac < 1.0:
                at = at[cut(npages[at], np.array([frac, 1.0 - frac])) == 0]
            who = np.full(npages.size, -1, dtype=np.int64)
            who[at] = i
            self.probes += 1
            predicted = models[i].predict(at.size, float(npages[at].sum()) * PAGE_SIZE)
            return Choice(who, predicted, True, i if at.size == npages.size else -1)

    def _plan(
        self,
        keys: Sequence[Hashable],
        models: list[SideModel],
        allowed: np.ndarray,
        npages: np.ndarray,
        nbytes: int,
    ) -> tuple[np.ndarray, float, int, int]:
        """The split predicted to finish soonest (each folio's side, read-only), its
        predicted seconds, how many sides it uses and the one side taking every folio
        (-1 where there is none)."""
        # batches of one shape come in runs: the split is chosen again only when a fit,
        # an interference factor, the batch or what its sides take changed
        key = (
            tuple(keys),
            tuple(m.version for m in models),
            tuple(self._k.items()),
            npages.size,
            nbytes,
            allowed.tobytes() if allowed.ndim == 1 else None,  # one flag a side
        )
        hit = self._last
        if (
            hit is not None
            and hit[0] == key
            and (allowed.ndim == 1 or np.array_equal(hit[1], allowed))
            and (hit[2] is None or np.array_equal(hit[2], npages))
        ):
            return hit[3], hit[4], hit[5], hit[6]
        who, predicted, used = self._fill(models, allowed, npages)
        home = keys.index(self.home) if self.home in keys else -1
        if home >= 0 and who.size and not (who == home).all() and models[home].cost is not None:
            takes_all = allowed[home] if allowed.ndim == 1 else bool(allowed[home].all())
            alone = models[home].predict(npages.size, float(nbytes))
            if takes_all and alone <= predicted * (1.0 + HOME_MARGIN):
                who, predicted, used = np.full(npages.size, home, dtype=np.int64), alone, 1
        # one side for every folio: the folios' sizes do not change that choice
        whole = who.size > 0 and who[0] >= 0 and who[0] == who[-1] and bool((who == who[0]).all())
        lone = int(who[0]) if whole else -1
        pages = None if whole else npages.copy()
        who.flags.writeable = False  # shared by the batches of a run
        self._last = (key, allowed.copy(), pages, who, predicted, used, lone)
        return who, predicted, used, lone

    def _probe_side(
        self,
        keys: Sequence[Hashable],
        models: list[SideModel],
        present: np.ndarray,
        npages: np.ndarray,
        nbytes: int,
        plan: Callable[[], tuple[np.ndarray, float, int, int]],
    ) -> tuple[int, float] | None:
        """The side this batch probes and its share, or None (no probe). *plan* gives
        the split the batch gets without a probe (computed once, where needed)."""
        quiet = (tuple(keys), present.tobytes())
        if self._quiet != quiet:
            stage = [self.stage.get(k, 0) for k in keys]
            first = [i for i in range(len(keys)) if present[i] and stage[i] < 3]
            if first:  # every side warmed up, then all alone, then on half
                i = min(first, key=lambda j: stage[j])
                self.stage[keys[i]] = stage[i] + 1
                if stage[i] == 0:
                    self._warming.add(keys[i])
                return i, 1.0 if stage[i] == 1 else 0.5
            # a side that stands on its calibration alone (scratch buffers, one moment),
            # predicted alone close to the best lone side, copies one batch to check it;
            # so does one close to a split in doubt (measured splits correct a split's
            # prediction, while a seed that never runs alone is never corrected)
            unchecked = [
                i
                for i, m in enumerate(models)
                if stage[i] == 3 and present[i] and m.seed is not None and not m.alone
            ]
            checked = 4 in self.stage.values()  # one check per batch shape
            if unchecked and not checked:
                lone = [
                    m.predict(npages.size, nbytes) if present[i] else math.inf
                    for i, m in enumerate(models)
                ]
                _, predicted, taking, _ = plan()
                best, skip = min(lone), lone.index(min(lone))
                if taking > 1 and abs(self.k(taking) - 1.0) > SPLIT_DOUBT:
                    # a split whose measured time its sides' models missed by far (they
                    # slow each other, or a seed is off): a lone side is judged against
                    # it, the best lone side too
                    best, skip = min(best, predicted), -1
                # the best lone side is trusted (or runs alone anyway): the closest other
                for i in sorted(unchecked, key=lambda j: lone[j]):
                    if i != skip and lone[i] <= SEED_CHECK * best:
                        self.stage[keys[i]] = 4
                        return i, 1.0
            else:
                self._quiet = quiet
        if self.batches % 8:
            return None
        # a side left idle for long may have got faster (or the others slower)
        for i, m in enumerate(models):
            if present[i] and m.idle >= REPROBE:
                return i, 1.0
        return None

    def _fill(
        self, models: list[SideModel], allowed: np.ndarray, npages: np.ndarray
    ) -> tuple[np.ndarray, float, int]:
        """Water-fill each group of folios over its measured sides; returns each folio's
        side, the predicted seconds and how many sides take part."""
        who = np.full(npages.size, -1, dtype=np.int64)
        load = np.zeros(len(models))
        for sides, at in _groups(allowed, npages.size):
            sides = np.array([s for s in sides if models[s].cost is not None], dtype=np.int64)
            if not sides.size:
                continue
            pages = npages if at.size == npages.size else npages[at]
            f_g, b_g = float(at.size), float(pages.sum()) * PAGE_SIZE
            fixed = np.empty(sides.size)
            var = np.empty(sides.size)
            for j, s in enumerate(sides):
                cost = models[s].cost
                assert cost is not None
                whole = float(cost.time(f_g, b_g))
                fixed[j] = load[s] if load[s] > 0 else cost.fixed_s
                var[j] = whole - cost.fixed_s
            shares, _ = water_fill(fixed, var, self.k)
            lone = np.flatnonzero(shares == 1.0)
            who[at] = sides[lone[0]] if lone.size else sides[cut(pages, shares)]
            for j, s in enumerate(sides):
                if shares[j] > 0:
                    load[s] = fixed[j] + var[j] * shares[j]
        used = int((load > 0).sum())
        t = float(load.max()) if load.size else 0.0
        return who, t * (self.k(used) if used > 1 else 1.0), used

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
                    seen = self.interference.setdefault(len(used), deque(maxlen=WINDOW))
                    seen.append(wall / independent)
                    self._k[len(used)] = float(min(4.0, max(0.5, np.median(seen))))
            took = {k for k, _ in used}
            for key in keys:
                if key not in took:
                    self.sides[key].idle += 1
            for key, c in used:
                if key in self._warming:  # a first call pays for what starts cold
                    self._warming.discard(key)
                    self.sides[key].idle = 0
                    continue
                self.sides[key].add(*c, alone=alone)
            self.log.append(
                {
                    "sides": {str(k): c[1] for k, c in used},
                    "predicted_s": predicted if math.isfinite(predicted) else None,
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
        return {
            "batches": self.batches,
            "probes": self.probes,
            "interference": {m: self.k(m) for m in sorted(self.interference)},
            "sides": sides,
            "median_abs_error_after_8": median_error(log[8:]),
            "log": log[-64:],
        }


def _groups(allowed: np.ndarray, n: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folios grouped by which sides may take them: (those sides, the folios); *n*,
    the folios, where *allowed* is one flag a side."""
    if allowed.ndim == 1:  # one flag a side: every folio goes to the sides flagged
        return [(np.flatnonzero(allowed), np.arange(n))] if allowed.any() and n else []
    if allowed.shape[1] == 0:
        return []
    rows = allowed.all(axis=1)
    if not (allowed[~rows].any()):  # the usual batch: each side takes all or nothing
        return [(np.flatnonzero(rows), np.arange(allowed.shape[1]))] if rows.any() else []
    weights = (1 << np.arange(allowed.shape[0], dtype=np.int64))[:, None]
    sig = (allowed.astype(np.int64) * weights).sum(axis=0)
    out = []
    for s in np.unique(sig):  # over the distinct signatures (a handful)
        at = np.flatnonzero(sig == s)
        out.append((np.flatnonzero(allowed[:, at[0]]), at))
    return out


__all__ = ["HOME_MARGIN", "Choice", "MultiSplit", "SideModel", "cut", "median_error", "water_fill"]
