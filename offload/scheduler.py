"""The scheduler: splits each batch copy between the CPU path and the offload engine."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .batch import FolioBatch
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

    #: Largest change of the adaptive CPU fraction per batch.
    STEP = 0.1

    def __init__(self, cpu: "Migrator", control: "OffloadControl", policy: Policy,
                 nodes: "list[Node]") -> None:
        self.cpu = cpu
        self.control = control
        self.policy = policy
        self.stats = SchedulerStats()
        self._cpu_reach = np.array([cpu.can_access(n) for n in nodes], dtype=bool)
        self._nodes = nodes
        self._lock = threading.Lock()

    def copy(self, batch: FolioBatch) -> None:
        """Copy what the policy gives each side; leave failures unmarked for the engine."""
        with self.control.use(batch.reason) as mig:
            if mig is None:
                self._cpu_copy(batch)
                return
            try:
                take = bool(mig.should_batch(batch))
                reach = np.array([mig.can_access(n) for n in self._nodes], dtype=bool)
            except Exception as exc:  # a plugin's bug must not fail the migration
                self.control.warn(mig, exc)
                take, reach = False, None
            if not take:
                self._cpu_copy(batch)
                return
            to_off = self._choose(batch)
            if not self._cpu_reach.all():
                to_off |= ~(self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node])
            if not reach.all():
                to_off &= reach[batch.src_node] & reach[batch.dst_node]
            self._run(mig, batch, to_off)

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

    def _choose(self, batch: FolioBatch) -> np.ndarray:
        p = self.policy
        n = len(batch)
        if p.kind == "offload-only":
            return np.ones(n, dtype=bool)
        if p.kind == "cpu-only":
            return np.zeros(n, dtype=bool)
        if p.kind == "threshold":
            return (batch.npages << 12) >= p.threshold
        nbytes = batch.npages.astype(np.float64)
        cum = np.cumsum(nbytes)
        # the offload takes the first (1 - f) of the bytes, submitted before the CPU starts
        return cum <= (1.0 - p.cpu_fraction) * cum[-1] + 0.5 * nbytes

    def _run(self, mig: "Migrator", batch: FolioBatch, to_off: np.ndarray) -> None:
        st = self.stats
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
        mig.folios_migrated += marked
        mig.folios_failures += len(off) - marked
        if marked < len(off):
            ok = False
            st.offload_failures += len(off) - marked
        if not whole:
            batch.absorb(off)
            batch.absorb(cpu)
        b_off, b_cpu = off.nbytes, cpu.nbytes
        st.bytes_offload += b_off
        st.bytes_cpu += b_cpu
        st.splits.append(b_cpu / max(1, b_off + b_cpu))
        if len(st.splits) > 4096:
            del st.splits[:2048]
        self._learn(b_cpu, t_cpu, b_off, t_off, ok)

    def _learn(self, b_cpu: int, t_cpu: float, b_off: int, t_off: float, ok: bool) -> None:
        st = self.stats
        if b_cpu and t_cpu > 0:
            st.cpu_gbps = _ewma(st.cpu_gbps, b_cpu / t_cpu / 1e9)
        if b_off and t_off > 0 and ok:  # failed offloads say nothing about its speed
            st.offload_gbps = _ewma(st.offload_gbps, b_off / t_off / 1e9)
        p = self.policy
        if p.kind != "adaptive" or not (st.cpu_gbps and st.offload_gbps):
            return
        target = st.cpu_gbps / (st.cpu_gbps + st.offload_gbps)
        step = max(-self.STEP, min(self.STEP, target - p.cpu_fraction))
        p.cpu_fraction = min(0.95, max(0.05, p.cpu_fraction + step))


def _ewma(old: float, new: float, alpha: float = 0.5) -> float:
    return new if not old else (1 - alpha) * old + alpha * new
