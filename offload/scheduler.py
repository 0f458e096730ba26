"""The scheduler: splits each batch copy between the CPU path and the offload engine."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import devmem
from .autotune import Autotune, ewma
from .batch import FolioBatch, handed_marks
from .calibrate import Scratch, calibrate, scratch_pages, timed
from .constants import PAGE_SHIFT
from .control import OffloadControl
from .costmodel import CallCost
from .counters import counters
from .errors import SpecError
from .guard import CallRunner, GuardedCall
from .migrator import Migrator, safe_spec, shipped_as
from .multisplit import MultiSplit
from .providers import Registration
from .sizes import parse_size

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

POLICIES = ("cpu-only", "offload-only", "static:F", "threshold:SIZE", "adaptive", "autotune")
#: Other names a policy is known by: ``model`` was the cost-model policy's name before
#: it became ``adaptive``
ALIASES = {"model": "adaptive"}


@dataclass
class Policy:
    """A parsed scheduler policy.

    Attributes
    ----------
    kind : str
        ``cpu-only``, ``offload-only``, ``static``, ``threshold``, ``adaptive`` (a cost
        model of each side, fitted online: :mod:`offload.multisplit`) or ``autotune``
        (measured throughputs, as Intel DTO's autotune: :class:`~offload.autotune.Autotune`).
    cpu_fraction : float
        CPU share of the bytes (static; the current estimate for autotune).
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
    ``adaptive``, ``autotune``; ``model`` is ``adaptive``).

    Raises
    ------
    SpecError
        For an unknown policy or a bad parameter.
    """
    if not isinstance(text, str):
        raise SpecError(f"policy: expected a string, got {type(text).__name__}")
    name, _, arg = text.strip().partition(":")
    name = ALIASES.get(name, name)
    if name in ("cpu-only", "offload-only", "adaptive", "autotune") and not arg:
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

    def record(self, failed: int, b_off: int, b_cpu: int) -> None:
        """Count a copied batch (the caller holds the scheduler's lock)."""
        self.offload_failures += failed
        self.bytes_offload += b_off
        self.bytes_cpu += b_cpu
        self.splits.append(b_cpu / max(1, b_off + b_cpu))
        if len(self.splits) > 4096:
            del self.splits[:2048]

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["splits"] = list(self.splits[-64:])
        return d


@dataclass
class CopyResult:
    """What the batch-copy step did, filled in as it goes (so that an error midway
    still tells the engine which backend calls may be running).

    Attributes
    ----------
    n : int
        Folios in the batch.
    migrator : Migrator or None
        The offload migrator that took part of the batch.
    by_offload : numpy.ndarray or None
        Per folio: marked copied by the offload (trusted marks only).
    calls : list of GuardedCall
        Every backend call started for this batch.
    abandoned : numpy.ndarray or None
        Per folio: given to a call abandoned at its deadline, which may still write
        to the folio's destination (the engine moves such folios to fresh frames).
    keep : numpy.ndarray or None
        After an abandoned call, per folio: whether it got a fresh destination and
        goes on (None: every folio goes on).
    fallback : int
        Folios the fallback copied (unmarked after the batch copy).
    providers : list of Migrator
        Every offload migrator that was given part of the batch (several with
        ``Machine(offload=[...])``).
    by_provider : numpy.ndarray or None
        Per folio: the index into *providers* of the one whose trusted mark copied it,
        -1 for none.
    given : list of Migrator
        The offload migrators that were given folios of the batch.
    """

    n: int = 0
    migrator: Migrator | None = None
    by_offload: np.ndarray | None = None
    providers: list = field(default_factory=list)
    by_provider: np.ndarray | None = None
    given: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    abandoned: np.ndarray | None = None
    keep: np.ndarray | None = None
    fallback: int = 0

    def pending(self) -> list:
        """The calls that have not returned yet."""
        return [c for c in self.calls if not c.done()]

    def abandon(self, at: np.ndarray) -> None:
        """Record that the folios at positions *at* were given to an abandoned call."""
        if self.abandoned is None:
            self.abandoned = np.zeros(self.n, dtype=bool)
        self.abandoned[at] = True


class Scheduler:
    """Runs the batch-copy step of the engine.

    The offload backend, and a CPU path that folio-offload does not ship, are called on
    workers of *runner* with a deadline of *timeout* seconds (a driver we ship that
    takes a whole batch runs on the calling thread: it keeps its own deadline). A call
    that raises (anything, ``SystemExit`` included) or returns late has its marks
    ignored, and a migrator with a call still running past its deadline gets no new
    batches until that call returns.

    Parameters
    ----------
    cpu : Migrator
        The CPU copy path.
    policy : Policy
        How to split a batch.
    nodes : list of Node
        The machine's nodes (for reachability).
    runner : CallRunner
        Workers for guarded calls.
    timeout : float
        Seconds a guarded call may take before it is abandoned.
    control : OffloadControl
        The registration of the active migrator (the engine's).
    batch_pages : int
        The batch limit (the calibration's scratch is as large, within bounds).
    """

    def __init__(
        self,
        cpu: Migrator,
        policy: Policy,
        nodes: list[Node],
        runner: CallRunner,
        timeout: float,
        control: OffloadControl,
        batch_pages: int = 512,
    ) -> None:
        self.cpu = cpu
        self.batch_pages = batch_pages
        #: per side (``"cpu"``, or a provider's id): the calibration's cost, or None
        #: where it could not be calibrated
        self._seeds: dict[object, CallCost | None] = {}
        self._cpu_counters = counters(cpu)
        #: the registration of the active migrator (the engine's, ``Machine.offload``)
        self.control = control
        self.policy = policy
        self.runner = runner
        self.timeout = timeout
        self.stats = SchedulerStats()
        #: one autotune state per batch shape (mean folio size, as a power of two): the
        #: best split for 4K folios is not the best for 2M ones
        self.autotune_by_size: dict[int, Autotune] = {}
        self.autotune = Autotune()
        #: the ``adaptive`` policy's, or several providers', split per batch shape
        self.multi_by_size: dict[int, MultiSplit] = {}
        self._names: dict[object, str] = {"cpu": "cpu"}
        self._nodes = nodes
        self._lock = threading.Lock()
        self._carry = 0.0  #: pages the CPU is owed (static split), carried between batches
        self._reach: dict[int, tuple[object, np.ndarray]] = {}
        self._stuck: dict[int, list[GuardedCall]] = {}
        self._cpu_reach = self.reach(cpu)
        kind = shipped_as(cpu)
        self._cpu_shipped = kind is not None
        self._cpu_inline = kind is not None and kind.plain_copy and bool(self._cpu_reach.all())

    def report(self) -> dict:
        """Observability: policy, current CPU fraction and the totals (a snapshot)."""
        d = self.stats.as_dict()
        d["policy"] = self.policy.spec
        d["cpu_fraction"] = self.policy.cpu_fraction
        # what the machine saw each migrator do (kept by folio-offload, not the plugin)
        active = self.control.active
        d["migrators"] = {"cpu": {"spec": safe_spec(self.cpu), **counters(self.cpu).as_dict()}}
        if active is not None:
            d["migrators"]["offload"] = {"spec": safe_spec(active), **counters(active).as_dict()}
        d["providers"] = [
            {"spec": safe_spec(r.migrator), **r.describe(), **counters(r.migrator).as_dict()}
            for r in self.control.providers
        ]
        if self.multi_by_size:
            d["split_by_folio_size"] = {
                1 << k: v.report(self._names) for k, v in sorted(self.multi_by_size.items())
            }
        if self.policy.kind == "autotune":
            a = self.autotune
            d["autotune"] = {"mode": a.mode, "split": a.split, "gbps": dict(a.gbps)}
            d["autotune_by_folio_size"] = {
                1 << k: {"mode": v.current, "split": v.split, "gbps": dict(v.gbps)}
                for k, v in sorted(self.autotune_by_size.items())
            }
        return d

    # -- what a backend reaches, and whether it is stuck -----------------------------------
    def reach(self, mig: Migrator) -> np.ndarray:
        """Per node: whether *mig* can read and write it (asked once per migrator)."""
        hit = self._reach.get(id(mig))
        if hit is not None and hit[0] is mig:
            return hit[1]
        try:
            r = np.array([bool(mig.can_access(n)) for n in self._nodes], dtype=bool)
        except BaseException as exc:
            self.control.warn(mig, exc)
            r = np.zeros(len(self._nodes), dtype=bool)
        with self._lock:
            self._reach[id(mig)] = (mig, r)
        return r

    def stuck(self, mig: Migrator) -> bool:
        """Whether a call of *mig* abandoned at its deadline is still running."""
        calls = self._stuck.get(id(mig))
        if not calls:
            return False
        with self._lock:
            calls[:] = [c for c in calls if not c.done()]
            return bool(calls)

    def cpu_reaches(self, batch: FolioBatch) -> np.ndarray:
        """Per folio: whether the CPU copy path can reach both of its nodes."""
        if self._cpu_reach.all():
            return np.ones(len(batch), dtype=bool)
        return self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node]

    def cpu_inline(self, reason: str) -> bool:
        """Whether a batch for *reason* would be copied by the CPU path alone, on the
        calling thread, with every node in its reach, and that path is one we ship whose
        copy is a plain memcpy: then a one-page migration may copy through
        :meth:`copy_page`."""
        return self._cpu_inline and self.control.idle(reason) and not self.stuck(self.cpu)

    def copy_page(self, src: Node, pfn: int, dst: Node, dpfn: int) -> None:
        """Copy one base page in place of the CPU path (where :meth:`cpu_inline` said
        so: a shipped plain-memcpy path would do exactly this) and count it for it."""
        dst.frames[dpfn] = src.frames[pfn]
        self._cpu_counters.add(folios_migrated=1)

    # -- the batch copy ----------------------------------------------------------------------
    def copy(
        self,
        batch: FolioBatch,
        res: CopyResult,
        rehome: Callable[[FolioBatch, CopyResult], np.ndarray] | None = None,
    ) -> None:
        """Copy every folio of *batch*: what the policy gives each side, then on the CPU
        path (or the plain page copy) whatever is still unmarked.

        Fills *res* as it goes: the migrator used, which folios it marked, the calls
        started and the folios abandoned with a late call. Those get fresh destinations
        from *rehome* (the engine's frames) before the fallback copies them; a folio
        with no fresh frame is left uncopied, ``res.keep`` False.
        """
        self._split_copy(batch, res)
        if res.abandoned is not None and rehome is not None:
            res.keep = rehome(batch, res)
        unmarked = ~batch.copied if res.keep is None else ~batch.copied & res.keep
        if not unmarked.any():
            return
        res.fallback = int(np.count_nonzero(unmarked))
        near = unmarked & self.cpu_reaches(batch)
        if self._cpu_shipped and near.any() and not self.stuck(self.cpu):
            self._shipped_cpu_copy(batch, near)
        left = unmarked & ~batch.copied
        if left.any():
            # what the CPU path could not or would not copy: the plain page copy, which
            # reaches device memory too (through the CUDA runtime)
            devmem.copy_folios(batch[left])
            batch.copied[left] = True

    def _split_copy(self, batch: FolioBatch, res: CopyResult) -> None:
        """The batch copy proper: the offload providers and the CPU path, as the policy
        splits the batch; failures stay unmarked."""
        with self.control.use(batch.reason) as regs:
            live = []
            for r in regs:
                if self.stuck(r.migrator):
                    counters(r.migrator).add(batches_skipped=1)
                else:
                    live.append(r)
            if not live:
                self.cpu_copy(batch, res)
                return
            if len(live) > 1 or self.policy.kind == "adaptive":
                self._run_many(batch, live, res)
                return
            mig = live[0].migrator
            to_off, ada = self._choose(batch)
            if not self._cpu_reach.all():
                to_off |= ~(self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node])
            allowed = self._allowed(live[0], batch)
            if allowed is not True:  # a provider limited to some sizes or nodes
                to_off &= allowed
            res.migrator = mig
            res.providers = [mig]
            if to_off.any():
                res.given = [mig]
            self._run(mig, batch, to_off, ada, res)
            assert res.by_offload is not None
            # provider 0 where the offload copied, -1 (the CPU path) elsewhere
            res.by_provider = res.by_offload.view(np.int8) - np.int8(1)

    def _allowed(self, reg: Registration, batch: FolioBatch) -> np.ndarray | bool:
        """Per folio: whether provider *reg* may take it (its folio sizes, its reach)."""
        ok: np.ndarray | bool = True
        if reg.limited:
            ok = reg.fits(batch.npages.astype(np.int64) << PAGE_SHIFT)
        reach = self.reach(reg.migrator)
        if not reach.all():
            ok = ok & reach[batch.src_node] & reach[batch.dst_node]
        return ok

    def cpu_copy(self, batch: FolioBatch, res: CopyResult, where: np.ndarray | None = None) -> None:
        """The CPU path copies what it can reach; the engine copies the rest later.

        *where* gives the position of each folio of *batch* in the batch *res* is
        about (None: *batch* is that batch).
        """
        if self.stuck(self.cpu):
            counters(self.cpu).add(batches_skipped=1)
            return
        reach = (
            None
            if self._cpu_reach.all()
            else self._cpu_reach[batch.src_node] & self._cpu_reach[batch.dst_node]
        )
        if reach is not None and not reach.any():
            return
        if self._cpu_shipped:
            self._shipped_cpu_copy(batch, reach)
            return
        own = batch[:] if reach is None else batch[reach]  # a failed call's marks stay there
        # what the plugin may rebind on its object is read before the call
        held, index, n = own.copied, own.index, len(own)
        assert index is not None  # a sub-batch knows its place in the batch
        call = self._start(self.cpu, own, res)
        at = index if where is None else where[index]
        if self._collect(self.cpu, call, time.perf_counter(), res, at):
            marks = handed_marks(held, n)
            marked = int(np.count_nonzero(marks))
            counters(self.cpu).add(folios_migrated=marked, folios_failures=n - marked)
            batch.copied[index] |= marks

    def _shipped_cpu_copy(self, batch: FolioBatch, sel: np.ndarray | None) -> None:
        """The CPU path we ship copies the folios *sel* of *batch* (None: all of them) on
        this thread, and its marks are counted for it."""
        sub = batch if sel is None else batch[sel]
        self.cpu.offload_copy(sub)
        self._cpu_counters.add(folios_migrated=int(np.count_nonzero(sub.copied)))
        if sub is not batch:
            batch.absorb(sub)

    def _start(self, mig: Migrator, sub: FolioBatch, res: CopyResult) -> GuardedCall:
        """Start *mig* on *sub* on a worker (``should_batch`` is asked there too)."""
        native = type(mig).submit is not Migrator.submit
        call = functools.partial(_copy_call, mig, sub, native)
        c = self.runner.start(call)
        res.calls.append(c)
        return c

    def _collect(
        self,
        mig: Migrator,
        call: GuardedCall | _Finished,
        t0: float,
        res: CopyResult,
        at: np.ndarray | None,
    ) -> bool:
        """Wait for *call* until its deadline; return whether its marks can be trusted.

        A late call is abandoned: the folios at positions *at* of the batch are recorded
        in *res* as possibly still written to. A failed call is warned about. A call
        declined by ``should_batch`` returns True with nothing marked.
        """
        if not call.wait(max(0.0, self.timeout - (time.perf_counter() - t0))):
            counters(mig).add(timeouts=1)
            assert isinstance(call, GuardedCall) and at is not None  # an inline call is over
            with self._lock:
                self._stuck.setdefault(id(mig), []).append(call)
            res.abandon(at)
            self.control.warn(mig, TimeoutError(f"no answer in {self.timeout:g} s"))
            return False
        if call.error is not None:
            self.control.warn(mig, call.error)
            return False
        return True

    def _choose(self, batch: FolioBatch) -> tuple[np.ndarray, Autotune | None]:
        """Which folios the offload gets, and the learning state that chose (if any)."""
        p = self.policy
        n = len(batch)
        if p.kind == "offload-only":
            return np.ones(n, dtype=bool), None
        if p.kind == "cpu-only":
            return np.zeros(n, dtype=bool), None
        if p.kind == "threshold":
            return (batch.npages << PAGE_SHIFT) >= p.threshold, None
        f = p.cpu_fraction
        ada: Autotune | None = None
        if p.kind == "autotune":
            shape = int(np.log2(max(1, batch.nbytes // max(1, n))))
            ada = self.autotune = self.autotune_by_size.setdefault(shape, Autotune())
            f = p.cpu_fraction = ada.fraction()
        if f >= 1.0:
            return np.zeros(n, dtype=bool), ada
        if f <= 0.0:
            return np.ones(n, dtype=bool), ada
        npg = batch.npages.astype(np.float64)
        cum = np.cumsum(npg)
        total = float(cum[-1])
        if p.kind != "static":
            # the offload takes the first (1 - f) of the pages, submitted before the CPU
            return cum <= (1.0 - f) * total + 0.5 * npg, ada
        with self._lock:
            # whole folios cannot give every batch exactly f: what one batch gives too
            # much or too little is carried to the next, so that the total comes out at f
            want = f * total + self._carry
            to_off = cum <= total - want + 0.5 * npg
            got = total - float(npg[to_off].sum())
            self._carry = min(total, max(-total, want - got))
        return to_off, ada

    def _calibrate(
        self,
        keys: list[object],
        sides: list[Migrator],
        used: np.ndarray,
        regs: list[Registration],
    ) -> list[CallCost | None]:
        """The seeds of *sides* (keyed by *keys*); a side that may take part in this batch
        (*used*) and was never calibrated is, now, on scratch buffers of its own
        (:mod:`offload.calibrate`). Only where every node is host memory."""
        todo = [(k, mig) for k, mig, u in zip(keys, sides, used) if u and k not in self._seeds]
        if todo:
            host = all(n.kind == "dram" for n in self._nodes)
            scratch = Scratch(scratch_pages(self.batch_pages)) if host else None
            ranges = {id(r.migrator): r for r in regs}
            for k, mig in todo:
                cost = None
                reg = ranges.get(id(mig))
                fits = _any_size if reg is None else functools.partial(_in_range, reg)
                if scratch is not None and not self.stuck(mig):
                    run = timed(functools.partial(self._scratch_copy, mig))
                    cost = calibrate(run, scratch, fits)
                with self._lock:
                    self._seeds[k] = cost
        return [self._seeds.get(k) for k in keys]

    def _scratch_copy(self, mig: Migrator, batch: FolioBatch) -> bool:
        """*mig* copies a scratch batch: on this thread where it is ours, else on a
        worker with the deadline (a late call is abandoned as any other). True where it
        returned in time and did not decline."""
        batch.copied[:] = False
        if mig is self.cpu and self._cpu_shipped:
            self.cpu.offload_copy(batch)
            return True
        if shipped_as(mig) is not None:
            done = _inline(mig, batch)
            return done.error is None and done.value is True
        res = CopyResult(n=len(batch))  # the scratch's own: nothing of a real batch
        call = self._start(mig, batch, res)
        if not self._collect(mig, call, time.perf_counter(), res, np.arange(len(batch))):
            return False
        return call.value is True

    def _run_many(self, batch: FolioBatch, regs: list[Registration], res: CopyResult) -> None:
        """Several providers, or policy ``adaptive``: the policy gives the CPU its part
        (with ``adaptive``, the CPU is one more side of the cost model), the cost models
        split the rest over the providers allowed for each folio
        (:mod:`offload.multisplit`); every provider's
        call runs on a worker, the CPU's part on this thread, and each call is collected
        at its own deadline."""
        n = len(batch)
        migs = [r.migrator for r in regs]
        res.providers = migs
        per = [self._allowed(r, batch) for r in regs]  # over the providers, not the folios
        kind = self.policy.kind
        ada: Autotune | None = None
        allowed: np.ndarray
        if (
            all(x is True for x in per)
            and kind in ("adaptive", "offload-only")
            and (kind == "offload-only" or self._cpu_reach.all())
        ):
            # the usual batch: every side takes every folio or none (one flag a side)
            allowed = np.array([kind == "adaptive"] + [True] * len(regs))
        else:
            allowed = np.zeros((len(regs) + 1, n), dtype=bool)
            for i, x in enumerate(per):
                allowed[i + 1] = x
            cpu_ok = self.cpu_reaches(batch)
            if kind == "adaptive":
                allowed[0] = cpu_ok
            else:
                to_off, ada = self._choose(batch)
                to_off = (to_off | ~cpu_ok) & allowed[1:].any(axis=0)
                allowed[0] = ~to_off
                allowed[1:] &= to_off
        npages = batch.npages
        nbytes = int(npages.sum()) << PAGE_SHIFT
        shape = (max(1, nbytes // max(1, n))).bit_length() - 1  # log2 of the mean folio
        keys: list[object] = ["cpu", *(id(m) for m in migs)]
        with self._lock:
            state = self.multi_by_size.get(shape)
            if state is None:  # not setdefault: that would build one every batch
                state = self.multi_by_size[shape] = MultiSplit(home="cpu")
            for i, m in enumerate(migs):
                if id(m) not in self._names:
                    self._names[id(m)] = f"{i + 1}:{safe_spec(m)}"
        used = allowed if allowed.ndim == 1 else np.asarray(allowed.any(axis=1))
        seeds = self._calibrate(keys, [self.cpu, *migs], used, regs)
        # a side whose call hangs past its deadline (its calibration's, maybe) is given
        # nothing while it hangs, the CPU path too: the batch goes to the others
        for i, mig in enumerate([self.cpu, *migs]):
            if self.stuck(mig):
                allowed[i] = False
        who, predicted, probe, lone = state.choose(keys, allowed, npages, nbytes, seeds)
        if lone > 0:  # one provider takes the whole batch: as with one provider
            res.given = [migs[lone - 1]]
            t0 = time.perf_counter()
            self._run(migs[lone - 1], batch, np.ones(n, dtype=bool), None, res)
            assert res.by_offload is not None
            ok = bool(res.by_offload.all())
            sides: list[tuple[int, int, float] | None] = [None] * (len(migs) + 1)
            wall = time.perf_counter() - t0
            sides[lone] = (n, nbytes, wall) if ok else None
            state.learn(keys, sides, predicted, wall, probe)
            res.by_provider = np.where(res.by_offload, lone - 1, -1).astype(np.int8)
            return
        with self._lock:
            self.stats.batches += 1
        t0 = time.perf_counter()
        calls = []
        for i, mig in enumerate(migs if lone < 0 else ()):  # lone 0: the CPU alone
            sel = who == i + 1
            if sel.any():
                sub = batch[sel]
                # a plugin may rebind anything on its object: what is read back is taken now
                held, index, nn, nb = sub.copied, sub.index, len(sub), sub.nbytes
                assert index is not None  # a sub-batch knows its place in the batch
                res.given.append(mig)
                calls.append((i, mig, self._start(mig, sub, res), held, index, nn, nb))
        t_cpu, b_cpu, n_cpu = 0.0, 0, 0
        sel = None if lone == 0 else who == 0
        if sel is None:  # the CPU alone: on the batch itself
            n_cpu, b_cpu = n, nbytes
            self.cpu_copy(batch, res)
            t_cpu = time.perf_counter() - t0
        elif sel.any():
            cpu = batch[sel]
            n_cpu, b_cpu = len(cpu), cpu.nbytes
            self.cpu_copy(cpu, res, where=cpu.index)
            t_cpu = time.perf_counter() - t0
            batch.absorb(cpu)
        by = np.full(n, -1, dtype=np.int8)
        sides = [(n_cpu, b_cpu, t_cpu)] + [None] * len(migs)
        b_off = failed_all = 0
        t_off = 0.0
        ok_all = True
        for i, mig, call, held, index, nn, nb in calls:
            marks, ok, failed = self._settle(mig, call, t0, res, index, held, nn)
            batch.copied[index] |= marks
            by[index[marks]] = i
            failed_all += failed
            b_off += nb
            if ok:
                sides[i + 1] = (nn, nb, call.finished_at - t0)
                t_off = max(t_off, call.finished_at - t0)
            else:
                ok_all = False
        res.by_provider = by
        res.by_offload = by >= 0
        wall = time.perf_counter() - t0
        state.learn(keys, sides, predicted, wall, probe)
        self._account(failed_all, b_cpu, t_cpu, b_off, t_off, wall, ok_all, ada)

    def _run(
        self,
        mig: Migrator,
        batch: FolioBatch,
        to_off: np.ndarray,
        ada: Autotune | None,
        res: CopyResult,
    ) -> None:
        st = self.stats
        with self._lock:
            st.batches += 1
        n = len(batch)
        whole = bool(to_off.all())
        inline = whole and shipped_as(mig) is not None
        if whole:
            # a backend gets its own markers and metadata, except a driver we ship taking
            # the whole batch: it keeps its own deadline (DCBM aborts its job at its
            # timeout), and nothing runs beside it to overlap with, so it runs here on
            # the batch itself
            off, cpu = (batch if inline else batch[:]), batch[:0]
        elif to_off.any():
            off, cpu = batch[to_off], batch[~to_off]
        else:
            # nothing offloaded: the CPU path takes the batch itself (cpu_copy hands a
            # plugin a copy of its own), not a sub-batch copied from every array of it,
            # and there is no call to settle
            t0 = time.perf_counter()
            self.cpu_copy(batch, res)
            t_cpu = time.perf_counter() - t0
            res.by_offload = np.zeros(n, dtype=bool)
            wall = time.perf_counter() - t0
            self._account(0, batch.nbytes, t_cpu, 0, 0.0, wall, True, ada)
            return
        # a plugin may rebind anything on its object: what is read back is taken now
        n_off, off_index, held, b_off = len(off), off.index, off.copied, off.nbytes
        t0 = time.perf_counter()
        call: GuardedCall | _Finished | None
        if inline:
            call = _inline(mig, off)
        else:
            call = self._start(mig, off, res) if len(off) else None
        t_cpu = 0.0
        if len(cpu):
            self.cpu_copy(cpu, res, where=cpu.index)
            t_cpu = time.perf_counter() - t0
        marks, ok, failed = self._settle(mig, call, t0, res, off_index, held, n_off, off is batch)
        marked = int(np.count_nonzero(marks))
        t_off = (call.finished_at - t0) if call is not None and ok else 0.0
        by_off = np.zeros(n, dtype=bool)
        if off is batch:
            batch.copied[:] = marks
            by_off = marks
        elif marked:
            batch.copied[off_index] |= marks
            by_off[off_index] = marks
        if len(cpu):
            batch.absorb(cpu)
        res.by_offload = by_off
        wall = time.perf_counter() - t0
        self._account(failed, cpu.nbytes, t_cpu, b_off, t_off, wall, ok, ada)

    def _settle(
        self,
        mig: Migrator,
        call: GuardedCall | _Finished | None,
        t0: float,
        res: CopyResult,
        at: np.ndarray | None,
        held: np.ndarray,
        n: int,
        own: bool = False,
    ) -> tuple[np.ndarray, bool, int]:
        """Wait for *call* until its deadline and count its marks for *mig*: those of
        the array it was handed (*held*; *own*: the batch's own, where a driver we ship
        ran on the batch itself), or none where the call failed, declined or is still
        running. Returns (the marks, whether every folio was copied by a trusted call,
        the folios it failed)."""
        trusted = call is None or self._collect(mig, call, t0, res, at)
        declined = call is not None and trusted and call.value is False
        if not trusted or declined:
            marks = np.zeros(n, dtype=bool)
        else:
            marks = held.copy() if own else handed_marks(held, n)
        marked = int(np.count_nonzero(marks))
        # a call abandoned at its deadline that declines when it returns failed nothing
        declined = call is not None and call.done() and call.value is False
        failed = 0 if declined else n - marked
        counters(mig).add(folios_migrated=marked, folios_failures=failed)
        return marks, trusted and not declined and marked == n, failed

    def _account(
        self,
        failed: int,
        b_cpu: int,
        t_cpu: float,
        b_off: int,
        t_off: float,
        wall: float,
        ok: bool,
        ada: Autotune | None,
    ) -> None:
        """Count a copied batch and learn from it: its bytes on each side, the folios
        the offload failed, each side's GB/s, and the autotune state that chose it."""
        cpu_rate = b_cpu / t_cpu / 1e9 if b_cpu and t_cpu > 0 else 0.0
        # a failed offload says nothing about its speed
        off_rate = b_off / t_off / 1e9 if b_off and t_off > 0 and ok else 0.0
        with self._lock:  # migrations from several threads share these counters
            st = self.stats
            st.record(failed, b_off, b_cpu)
            if cpu_rate:
                st.cpu_gbps = ewma(st.cpu_gbps, cpu_rate)
            if off_rate:
                st.offload_gbps = ewma(st.offload_gbps, off_rate)
            if ada is not None:
                ada.learn(b_cpu + b_off, wall, cpu_rate, off_rate, ok)


class _Finished:
    """A call that ran on this thread and is over (what :class:`GuardedCall` says)."""

    __slots__ = ("error", "finished_at", "value")

    def __init__(self, value: object, error: BaseException | None) -> None:
        self.value, self.error, self.finished_at = value, error, time.perf_counter()

    def done(self) -> bool:
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return True


def _copy_call(mig: Migrator, sub: FolioBatch, native: bool = False) -> bool:
    """Ask *mig* to copy *sub*: False when ``should_batch`` declines it, else True once
    copied (through ``submit`` for a migrator with a native asynchronous one)."""
    if not mig.should_batch(sub):
        return False
    if native:
        mig.submit(sub).result()
    else:
        mig.offload_copy(sub)
    return True


def _any_size(nbytes: int) -> bool:
    return True


def _in_range(reg: Registration, nbytes: int) -> bool:
    """Whether *reg* takes folios of *nbytes* bytes."""
    return bool(reg.fits(np.array([nbytes]))[0])


def _inline(mig: Migrator, sub: FolioBatch) -> _Finished:
    """Run a trusted migrator on this thread; return the finished call."""
    try:
        return _Finished(_copy_call(mig, sub), None)
    except Exception as exc:  # a failure of the offload is the CPU's to fix
        return _Finished(None, exc)
