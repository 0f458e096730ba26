"""The scheduler: splits each batch copy between the CPU path and the offload engine."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .batch import FolioBatch
from .constants import PAGE_SHIFT
from .errors import SpecError
from .sizes import parse_size

if TYPE_CHECKING:  # pragma: no cover
    from .control import OffloadControl
    from .migrator import Migrator
    from .node import Node

POLICIES = ("cpu-only", "offload-only", "static:F", "threshold:SIZE", "adaptive")


@dataclass
class Policy:
    """A parsed scheduler policy.

    Attributes
    ----------
    kind : str
        ``cpu-only``, ``offload-only``, ``static``, ``threshold`` or ``adaptive``.
    cpu_fraction : float
        CPU share of the bytes (static; the current estimate for adaptive).
    threshold : int
        Folios smaller than this many bytes stay on the CPU (threshold).
    """

    kind: str
    cpu_fraction: float = 0.0
    threshold: int = 0

    @property
    def spec(self) -> str:
        if self.kind == "static":
            return f"static:{self.cpu_fraction:g}"
        if self.kind == "threshold":
            return f"threshold:{self.threshold}"
        return self.kind


def parse_policy(text: str) -> Policy:
    """Parse a policy string (``cpu-only``, ``offload-only``, ``static:F``, ``threshold:SIZE``,
    ``adaptive``).

    Raises
    ------
    SpecError
        For an unknown policy or a bad parameter.
    """
    if not isinstance(text, str):
        raise SpecError(f"policy: expected a string, got {type(text).__name__}")
    name, _, arg = text.strip().partition(":")
    if name in ("cpu-only", "offload-only", "adaptive") and not arg:
        return Policy(name, cpu_fraction={"cpu-only": 1.0, "offload-only": 0.0}.get(name, 0.5))
    if name == "static" and arg:
        try:
            f = float(arg)
        except ValueError:
            raise SpecError(f"policy: static:F needs a number F in [0, 1], got {arg!r}") from None
        if not 0.0 <= f <= 1.0:
            raise SpecError(f"policy: static:F needs F in [0, 1], got {f}")
        return Policy("static", cpu_fraction=f)
    if name == "threshold" and arg:
        return Policy("threshold", threshold=parse_size(arg, "policy threshold"))
    raise SpecError(f"policy: unknown policy {text!r} (expected one of {', '.join(POLICIES)})")


@dataclass
class SchedulerStats:
    """What the scheduler did: totals, and each side's measured throughput."""

    batches: int = 0
    bytes_cpu: int = 0
    bytes_offload: int = 0
    offload_failures: int = 0
    cpu_gbps: float = 0.0
    offload_gbps: float = 0.0
    splits: list = field(default_factory=list)  #: CPU byte fraction chosen per batch

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["splits"] = list(self.splits[-64:])
        return d


class Scheduler:
    """Runs the batch-copy step of the engine.

    Parameters
    ----------
    cpu : Migrator
        The CPU copy path.
    control : OffloadControl
        Where the active migrator is found.
    policy : Policy
        How to split a batch.
    nodes : list of Node
        The machine's nodes (for reachability).
    """

    def __init__(self, cpu: "Migrator", control: "OffloadControl", policy: Policy,
                 nodes: "list[Node]") -> None:
        self.cpu = cpu
        self.control = control
        self.policy = policy
        self.stats = SchedulerStats()
        #: one adaptive state per batch shape (mean folio size, as a power of two): the
        #: best split for 4K folios is not the best for 2M ones
        self.adaptive_by_size: dict[int, Adaptive] = {}
        self.adaptive = Adaptive()
        self._cpu_reach = np.array([cpu.can_access(n) for n in nodes], dtype=bool)
        self._nodes = nodes
        self._lock = threading.Lock()

    def report(self) -> dict:
        """Observability: policy, current CPU fraction and the totals (a snapshot)."""
        d = self.stats.as_dict()
        d["policy"] = self.policy.spec
        d["cpu_fraction"] = self.policy.cpu_fraction
        if self.policy.kind == "adaptive":
            a = self.adaptive
            d["adaptive"] = {"mode": a.mode, "split": a.split, "gbps": dict(a.gbps)}
            d["adaptive_by_folio_size"] = {
                1 << k: {"mode": v.current, "split": v.split, "gbps": dict(v.gbps)}
                for k, v in sorted(self.adaptive_by_size.items())}
        return d

    def copy(self, batch: FolioBatch) -> tuple["Migrator | None", np.ndarray | None]:
        """Copy what the policy gives each side; leave failures unmarked for the engine.

        Returns the migrator used (or None) and which folios it marked copied.
        """
        with self.control.use(batch.reason) as mig:
            if mig is None:
                self._cpu_copy(batch)
                return None, None
            try:
                take = bool(mig.should_batch(batch))
                reach = np.array([mig.can_access(n) for n in self._nodes], dtype=bool)
            except Exception as exc:  # a plugin's bug must not fail the migration
                self.control.warn(mig, exc)
                take, reach = False, None
            if not take:
                self._cpu_copy(batch)
                return None, None
            to_off, ada = self._choose(batch)
            if not self._cpu_reach.all():
                to_off |= ~(self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node])
            if not reach.all():
                to_off &= reach[batch.src_node] & reach[batch.dst_node]
            return mig, self._run(mig, batch, to_off, ada)

    def _cpu_copy(self, batch: FolioBatch) -> None:
        """The CPU path copies what it can reach; the engine copies the rest later."""
        if self._cpu_reach.all():
            self.cpu.offload_copy(batch)
            return
        ok = self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node]
        if ok.any():
            sub = batch[ok]
            self.cpu.offload_copy(sub)
            batch.absorb(sub)

    def cpu_reaches(self, batch: FolioBatch) -> np.ndarray:
        """Per folio: whether the CPU copy path can reach both of its nodes."""
        if self._cpu_reach.all():
            return np.ones(len(batch), dtype=bool)
        return self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node]

    def _choose(self, batch: FolioBatch) -> tuple[np.ndarray, "Adaptive | None"]:
        """Which folios the offload gets, and the adaptive state that chose (if any)."""
        p = self.policy
        n = len(batch)
        if p.kind == "offload-only":
            return np.ones(n, dtype=bool), None
        if p.kind == "cpu-only":
            return np.zeros(n, dtype=bool), None
        if p.kind == "threshold":
            return (batch.npages << PAGE_SHIFT) >= p.threshold, None
        f = p.cpu_fraction
        ada = None
        if p.kind == "adaptive":
            shape = int(np.log2(max(1, batch.nbytes // max(1, n))))
            ada = self.adaptive = self.adaptive_by_size.setdefault(shape, Adaptive())
            f = p.cpu_fraction = ada.fraction()
        if f >= 1.0:
            return np.zeros(n, dtype=bool), ada
        if f <= 0.0:
            return np.ones(n, dtype=bool), ada
        nbytes = batch.npages.astype(np.float64)
        cum = np.cumsum(nbytes)
        # the offload takes the first (1 - f) of the bytes, submitted before the CPU starts
        return cum <= (1.0 - f) * cum[-1] + 0.5 * nbytes, ada

    def _run(self, mig: "Migrator", batch: FolioBatch, to_off: np.ndarray,
             ada: "Adaptive | None") -> np.ndarray:
        st = self.stats
        with self._lock:
            st.batches += 1
        whole = bool(to_off.all())
        off = batch if whole else batch[to_off]
        cpu = batch[:0] if whole else batch[~to_off]
        done_at = [0.0]
        t0 = time.perf_counter()
        ok = True
        if len(off) and len(cpu):
            try:
                handle = mig.submit(off)
                if hasattr(handle, "add_done_callback"):
                    handle.add_done_callback(lambda _f: done_at.__setitem__(0, time.perf_counter()))
            except Exception as exc:
                self.control.warn(mig, exc)
                handle, ok = None, False
            self.cpu.offload_copy(cpu)
            t_cpu = time.perf_counter() - t0
            if handle is not None:
                try:
                    handle.result()
                except Exception as exc:
                    self.control.warn(mig, exc)
                    ok = False
            t_off = (done_at[0] or time.perf_counter()) - t0
        elif len(off):
            try:
                mig.offload_copy(off)
            except Exception as exc:
                self.control.warn(mig, exc)
                ok = False
            t_off, t_cpu = time.perf_counter() - t0, 0.0
        else:
            self.cpu.offload_copy(cpu)
            t_cpu, t_off = time.perf_counter() - t0, 0.0
        marked = int(off.copied.sum())
        if marked < len(off):
            ok = False
        if not whole:
            batch.absorb(off)
            batch.absorb(cpu)
        b_off, b_cpu = off.nbytes, cpu.nbytes
        with self._lock:  # migrations from several threads share these counters
            mig.folios_migrated += marked
            mig.folios_failures += len(off) - marked
            st.offload_failures += len(off) - marked
            st.bytes_offload += b_off
            st.bytes_cpu += b_cpu
            st.splits.append(b_cpu / max(1, b_off + b_cpu))
            if len(st.splits) > 4096:
                del st.splits[:2048]
            self._learn(b_cpu, t_cpu, b_off, t_off, time.perf_counter() - t0, ok, ada)
        by_off = np.zeros(len(batch), dtype=bool)
        if whole:
            by_off[:] = off.copied
        elif len(off):
            by_off[off.index] = off.copied
        return by_off

    def _learn(self, b_cpu: int, t_cpu: float, b_off: int, t_off: float, wall: float,
               ok: bool, ada: "Adaptive | None") -> None:
        st = self.stats
        cpu_rate = b_cpu / t_cpu / 1e9 if b_cpu and t_cpu > 0 else 0.0
        # a failed offload says nothing about its speed
        off_rate = b_off / t_off / 1e9 if b_off and t_off > 0 and ok else 0.0
        if cpu_rate:
            st.cpu_gbps = _ewma(st.cpu_gbps, cpu_rate)
        if off_rate:
            st.offload_gbps = _ewma(st.offload_gbps, off_rate)
        if ada is not None:
            ada.learn(b_cpu + b_off, wall, cpu_rate, off_rate, ok)


class Adaptive:
    """The adaptive policy: measured throughput decides each batch's CPU fraction.

    Three ways to copy a batch are measured (whole-batch GB/s, smoothed): all on the CPU,
    all offloaded, and split so that both sides finish together, the split fraction
    being corrected after every split batch from the two sides' measured GB/s, in steps
    of at most ``STEP`` (as Intel DTO's autotune corrects its fraction). After measuring
    each mode ``WARMUP`` times, each batch uses the best of the three (leaving the mode
    in use only for one ``MARGIN`` better); every ``PROBE_EVERY``-th batch re-measures
    the stalest, so that a change in either side's speed is noticed. Failed offloads
    are not measured.
    """

    MODES = ("split", "cpu", "offload")
    STEP = 0.1
    PROBE_EVERY = 32
    MARGIN = 0.05
    ALPHA = 0.3
    WARMUP = 2

    def __init__(self, split: float = 0.5) -> None:
        self.split = split
        self.gbps = dict.fromkeys(self.MODES, 0.0)
        self.seen = dict.fromkeys(self.MODES, -1)
        self.batches = 0
        self.mode = "split"
        self.current = "split"  #: the mode exploited between probes
        self.rates = (0.0, 0.0)  #: CPU and offload GB/s seen in split batches
        self.rates_seen = 0
        self.scored_at: float | None = None  #: the split fraction the split score is for

    def fraction(self) -> float:
        """Choose this batch's mode; return its CPU fraction."""
        self.batches += 1
        if self.batches <= self.WARMUP * len(self.MODES):
            # measure every mode WARMUP times, round robin, before trusting any
            self.mode = self.MODES[(self.batches - 1) % len(self.MODES)]
            self.current = max(self.MODES, key=lambda m: self.gbps[m])
        elif self.batches % self.PROBE_EVERY == 0:
            self.mode = min(self.MODES, key=lambda m: self.seen[m])
        else:
            best = max(self.MODES, key=lambda m: self.gbps[m])
            # hysteresis: leave the mode in use only for a clearly better one
            if self.gbps[best] > (1 + self.MARGIN) * self.gbps[self.current]:
                self.current = best
            self.mode = self.current
        return {"split": self.split, "cpu": 1.0, "offload": 0.0}[self.mode]

    def learn(self, nbytes: int, wall: float, cpu_rate: float, off_rate: float, ok: bool) -> None:
        """Record the batch just copied in the chosen mode."""
        mode = self.mode
        self.seen[mode] = self.batches
        # while warming up, each new sample replaces the last: first runs are cold
        alpha = 1.0 if self.batches <= self.WARMUP * len(self.MODES) else self.ALPHA
        if mode == "split":
            used = self.split
            if ok and wall > 0 and nbytes:
                gbps = nbytes / wall / 1e9
                # a score measured at another fraction is stale: replace it, don't blend
                same = self.scored_at is not None and abs(used - self.scored_at) <= 0.05
                self.gbps["split"] = _ewma(self.gbps["split"], gbps, alpha) if same else gbps
                self.scored_at = used
            elif not self.gbps["split"]:
                self.gbps["split"] = 1e-9
            if cpu_rate and off_rate:
                self.rates = (_ewma(self.rates[0], cpu_rate, self.ALPHA),
                              _ewma(self.rates[1], off_rate, self.ALPHA))
                rc, ro = self.rates
                target = rc / (rc + ro)
                # the first estimate is taken whole; later ones in bounded steps
                step = target - used if self.rates_seen == 0 else \
                    max(-self.STEP, min(self.STEP, target - used))
                self.split = min(0.98, max(0.02, used + step))
                self.rates_seen += 1
        elif ok and wall > 0 and nbytes:
            self.gbps[mode] = _ewma(self.gbps[mode], nbytes / wall / 1e9, alpha)
        elif not self.gbps[mode]:
            self.gbps[mode] = 1e-9  # measured as failing: not chosen until probed again


def _ewma(old: float, new: float, alpha: float = 0.5) -> float:
    return new if not old else (1 - alpha) * old + alpha * new
