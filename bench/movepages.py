"""The move_pages suite: GB/s of moving a populated region between two nodes."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload import PAGE_SIZE, Machine
from offload.errors import VerificationFailed

from .stats import summarize

SUITE = "move_pages"
#: Batch limit the suite uses by default, in base pages (256 MiB). The kernel's is 512;
#: the series' benchmarks raised it with a test patch, as this does.
DEFAULT_BATCH_PAGES = 65536


@dataclass
class Case:
    """One cell of the table: a backend spec and a folio size."""

    backend: str
    folio_size: int
    total: int
    repeat: int = 3
    warmup: int = 1
    batch_pages: int = DEFAULT_BATCH_PAGES
    seed: int = 0
    to: str = "dram"  #: kind of the destination node (node 1)
    #: split suite: the CPU path, the offload backend and the policy; ``backend`` then
    #: names the policy
    cpu: str | None = None
    offload: str | None = None
    policy: str | None = None
    suite: str = SUITE
    verify: bool = False  #: Machine(verify=True): every batch compared after its copy
    layout: str = "aged"  #: the nodes' free memory: "aged" (scattered) or "fresh"

    def machine_key(self) -> tuple:
        return (
            self.backend,
            self.total,
            self.batch_pages,
            self.to,
            self.cpu,
            self.offload,
            self.policy,
            self.verify,
            self.layout,
        )


class VerificationError(VerificationFailed, AssertionError):
    """A benchmark run left wrong bytes (or wrong counters) behind (exit status 3)."""


def machine_for(
    backend: str,
    total: int,
    batch_pages: int,
    to: str = "dram",
    cpu: str | None = None,
    offload: str | None = None,
    policy: str | None = None,
    verify: bool = False,
    layout: str = "aged",
) -> Machine:
    """A two-node machine sized for *total* bytes, with *backend* doing the batch copy.

    ``cpu-serial`` is the vanilla kernel (no migrator registered); any other backend is
    registered as the migrator with the ``offload-only`` policy, so it copies every batch.
    Node 1 is of kind *to* (``dram`` or ``device``). With *policy*, the machine is built
    from *cpu*, *offload* and *policy* instead (the split suite). *layout*: the nodes'
    free memory, ``aged`` (scattered, as on a machine that has run a while) or ``fresh``.
    """
    node = ((total + (8 << 20)) >> 21) << 21
    copy: dict[str, Any]
    if policy is not None:  # the split suite: both sides given
        copy = {"cpu": cpu or "cpu-serial", "offload": offload, "policy": policy}
    elif backend.strip() == "cpu-serial":  # the vanilla kernel: no migrator
        copy = {"cpu": "cpu-serial"}
    else:  # the backend copies every batch
        copy = {"cpu": "cpu-serial", "offload": backend, "policy": "offload-only"}
    return Machine(
        nodes=f"dram:{node},{to}:{node}",
        batch_pages=batch_pages,
        verify=verify,
        layout=layout,
        prefault=True,
        **copy,
    )


def peak_estimate(total: int, machines: int) -> int:
    """Bytes a run of *machines* two-node machines moving *total* bytes may peak at.

    Each machine holds two nodes of about *total*; beside them sit the data pattern and
    the chunks read back to verify, plus the interpreter (measured: 256M with one
    machine peaked at 1.1 GB, with six at 2.0 GB for 128M).
    """
    node = ((total + (8 << 20)) >> 21) << 21
    return machines * 2 * node + 2 * total + (256 << 20)


def pattern(total: int, seed: int) -> np.ndarray:
    """Reproducible content for the region: random bytes, page number in each page."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=total, dtype=np.uint8)
    pages = data.reshape(-1, PAGE_SIZE)
    pages[:, :8] = np.arange(pages.shape[0], dtype=np.uint64)[:, None].view(np.uint8)
    return data


def _same_bytes(p, addr: int, data: np.ndarray, chunk: int = 8 << 20) -> bool:
    """Compare the region with *data* in chunks (no region-sized temporary)."""
    for off in range(0, data.size, chunk):
        part = data[off : off + chunk]
        if not np.array_equal(p.read_array(addr + off, part.size), part):
            return False
    return True


class Cell:
    """One cell of a table, run one migration at a time (so that cells can interleave).

    Parameters
    ----------
    case : Case
        What to run.
    data : numpy.ndarray
        The region's content.
    machine : Machine
        A machine from :func:`machine_for` for this case (shared by the cells of one
        backend; the region is unmapped at :meth:`finish`).
    """

    def __init__(self, case: Case, data: np.ndarray, machine: Machine) -> None:
        self.case, self.data, self.m = case, data, machine
        self.p = machine.spawn(uid=0)
        self.addr = self.p.mmap(case.total, node=0, folio_size=case.folio_size)
        self.p.write(self.addr, data)
        self.addrs = np.arange(self.addr, self.addr + case.total, case.folio_size, dtype=np.int64)
        self.where = 0
        self.runs = 0
        self.stray_writes = 0
        self.wrong_copies = 0
        self.samples: dict[str, list[float]] = {
            k: [] for k in ("gbps", "copy", "overhead", "first", "cpu", "copy_cpu", "copy_cpu_s")
        }

    @property
    def planned(self) -> int:
        return self.case.warmup + self.case.repeat

    def run_once(self) -> None:
        """One migration of the whole region, verified; timed once past the warm-up."""
        case, m, p = self.case, self.m, self.p
        total = case.total
        if case.to != "dram" and self.where == 1:  # time dram -> device only
            p.move_pages(self.addrs, np.zeros(self.addrs.size, dtype=np.int64))
            self.where = 0
        self.where = 1 - self.where
        targets = np.full(self.addrs.size, self.where, dtype=np.int64)
        eng = m.stats["engine"]
        before = eng["copy_s"]
        cpu_before = eng["copy_cpu_s"]
        caught_before = (eng["stray_writes"], eng["verify_failures"])
        moved_before = m.vmstat["pgmigrate_success"]
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = p.move_pages(self.addrs, targets)
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
        eng = m.stats["engine"]
        copy_s = eng["copy_s"] - before
        copy_cpu = eng["copy_cpu_s"] - cpu_before
        # what verify mode caught and repaired in this run (warm-up runs included)
        self.stray_writes += eng["stray_writes"] - caught_before[0]
        self.wrong_copies += eng["verify_failures"] - caught_before[1]
        if res.ret != 0 or m.vmstat["pgmigrate_success"] - moved_before != total // PAGE_SIZE:
            raise VerificationError(
                f"{case.backend} at {case.folio_size}: {res.ret} pages not migrated"
            )
        if not _same_bytes(p, self.addr, self.data):
            raise VerificationError(
                f"{case.backend} at {case.folio_size}: wrong bytes after migration"
            )
        self.runs += 1
        if self.runs > case.warmup:
            s = self.samples
            s["gbps"].append(total / dt / 1e9)
            s["copy"].append(copy_s / dt)
            s["overhead"].append((dt - copy_s) / (total // case.folio_size) * 1e6)
            s["first"].append((m.stats["engine"]["first_remap_at"] - t0) * 1e6)
            s["cpu"].append(dc)
            s["copy_cpu"].append(copy_cpu / copy_s if copy_s > 0 else 0.0)
            s["copy_cpu_s"].append(copy_cpu)

    def finish(self) -> dict:
        """Unmap the region; return the result row (docs/bench-schema.json)."""
        case, s = self.case, self.samples
        self.p.munmap(self.addr, case.total)
        total = case.total
        gbps = s["gbps"]
        row = {
            "suite": case.suite,
            "backend": case.backend,
            "folio_size": case.folio_size,
            "total_bytes": total,
            "folios": total // case.folio_size,
            "repeat": case.repeat,
            "warmup": case.warmup,
            "batch_pages": case.batch_pages,
            "layout": case.layout,
            "direction": "dram->device" if case.to != "dram" else "dram<->dram",
            "gbps": gbps,
        }
        row.update(summarize(gbps))
        row["copy_fraction"] = float(np.median(s["copy"]))
        total_ms = float(np.median([total / g / 1e6 for g in gbps]))
        row["overhead_us_per_folio"] = float(np.median(s["overhead"]))
        # the same measure, named for what it is: the time outside the copy step, per
        # folio and per 4 KiB page (per folio it grows with the folio's pages)
        noncopy = float(np.median(s["overhead"]))
        row["noncopy_us_per_folio"] = noncopy
        row["noncopy_us_per_page"] = noncopy / (case.folio_size // PAGE_SIZE)
        row["first_folio_us"] = float(np.median(s["first"]))
        row["total_ms"] = total_ms
        # CPU time of the whole process (copy threads included) per GB moved, and per second
        row["cpu_s_per_gb"] = float(np.median(s["cpu"])) / (total / 1e9)
        row["cpu_utilization"] = float(np.median(s["cpu"])) / (total_ms / 1e3)
        # CPUs busy during the copy step alone: what its threads or channels really use
        row["copy_cpu_utilization"] = float(np.median(s["copy_cpu"]))
        # CPU seconds per GB of the copy step alone: what an engine that copies without
        # the CPU would save (the whole call's is cpu_s_per_gb)
        row["copy_cpu_s_per_gb"] = float(np.median(s["copy_cpu_s"])) / (total / 1e9)
        row["verified"] = True
        row["engine_verify"] = case.verify
        if case.verify:  # what the engine's checks caught (and repaired) in this cell
            row["stray_writes"] = self.stray_writes
            row["wrong_copies"] = self.wrong_copies
        # an emulated engine's speed is its model's, not this machine's: said in every row
        row["emulated"] = any(
            bool(getattr(type(r.migrator), "emulated", False)) for r in self.m.offload.providers
        )
        if case.policy is not None:
            rep = self.m.offload.stats
            row["cpu"], row["offload"] = case.cpu, case.offload
            row["cpu_fraction"] = (
                rep["cpu_fraction"]
                if case.policy == "autotune"
                else rep["bytes_cpu"] / max(1, rep["bytes_cpu"] + rep["bytes_offload"])
            )
            if len(rep["providers"]) > 1:  # several engines: what each one did
                row["providers"] = rep["providers"]
            splits = rep.get("split_by_folio_size", {})
            if splits:  # policy adaptive or several engines: each side's cost, each batch's
                row["cost_model"] = splits.get(case.folio_size) or next(iter(splits.values()))
            row["cpu_gbps_measured"] = rep["cpu_gbps"]
            row["offload_gbps_measured"] = rep["offload_gbps"]
            row["offload_failures"] = rep["offload_failures"]
        return row


def run_case(case: Case, data: np.ndarray | None = None, machine: Machine | None = None) -> dict:
    """Run one cell on its own; return its result row.

    Raises
    ------
    VerificationError
        When a run did not move every page or left a wrong byte.
    """
    if data is None:
        data = pattern(case.total, case.seed)
    m = machine_for(*case.machine_key()) if machine is None else machine
    try:
        cell = Cell(case, data, m)
        for _ in range(cell.planned):
            cell.run_once()
        return cell.finish()
    finally:
        if machine is None:
            m.close()


def interleaves(cases: list[Case], available: int, extra: int = 0) -> bool:
    """Whether the cells can take turns: all their machines alive at once (and *extra*
    bytes beside them) must fit in 3x the data plus 1 GiB, or in a quarter of the
    *available* memory."""
    if not cases:
        return True
    total = cases[0].total
    need = peak_estimate(total, len({c.machine_key() for c in cases})) + extra
    return need <= 3 * total + (1 << 30) or (available > 0 and need <= available // 4)


def run_cases(
    cases: list[Case],
    data: np.ndarray,
    on_done: Callable[[Case, dict], None] | None = None,
    interleave: bool = True,
    on_run: Callable[[Case], None] | None = None,
    on_round: Callable[[int, int, int], None] | None = None,
) -> list[dict]:
    """Run cells, interleaved: the cells of one folio size take turns, one run each.

    Interleaving spreads slow drifts of the machine (other tenants, frequency) evenly
    over the rows being compared, instead of over whichever row ran at the bad moment.
    Every cell's timed runs fall in the same final rounds; a cell with a longer warm-up
    starts earlier. One machine per backend. With *interleave* False (large runs: see
    :func:`interleaves`), one machine at a time runs all its cells, so that memory holds
    one machine, not one per backend. ``on_run(case)`` follows every run (warm-up ones
    included), ``on_done(case, row)`` every finished cell, and ``on_round(r, rounds,
    folio_size)`` every round of the cells taking turns (round r of *rounds* of the cells
    of that folio size; interleaved only), so that a reference can be timed in the same
    conditions as the rows' timed runs (the last rounds), and each size's rows judged by
    the passes of their own rounds.
    """

    def once(cell: Cell) -> None:
        cell.run_once()
        if on_run:
            on_run(cell.case)

    rows: dict[int, dict] = {}
    if not interleave:
        by_key: dict[tuple, list[int]] = {}
        for i, c in enumerate(cases):
            by_key.setdefault(c.machine_key(), []).append(i)
        for key, idx in by_key.items():
            m = machine_for(*key)
            cell: Cell | None = None
            try:
                for i in idx:
                    cell = Cell(cases[i], data, m)
                    for _ in range(cell.planned):
                        once(cell)
                    rows[i] = cell.finish()
                    if on_done:
                        on_done(cases[i], rows[i])
            finally:
                m.close()
                # a machine and its processes refer to each other: free its nodes now,
                # not whenever the cycle collector next runs (nor while the last cell,
                # which holds it, waits for the next machine to be built beside it)
                del m, cell
                gc.collect()
        return [rows[i] for i in range(len(cases))]
    machines: dict[tuple, Machine] = {}
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cases):
        groups.setdefault((c.folio_size, c.total), []).append(i)
    try:
        for (size, _), idx in groups.items():
            cells = {}
            for i in idx:
                key = cases[i].machine_key()
                if key not in machines:
                    machines[key] = machine_for(*key)
                cells[i] = Cell(cases[i], data, machines[key])
            rounds = max(c.planned for c in cells.values())
            for r in range(rounds):
                for cell in cells.values():
                    if r >= rounds - cell.planned:
                        once(cell)
                if on_round:
                    on_round(r, rounds, size)
            for i, cell in cells.items():
                rows[i] = cell.finish()
                if on_done:
                    on_done(cases[i], rows[i])
    finally:
        for m in machines.values():
            m.close()
        machines.clear()
        gc.collect()
    return [rows[i] for i in range(len(cases))]


def one_page_us(moving: bool, calls: int = 200, rounds: int = 9, layout: str = "aged") -> float:
    """Microseconds per model move_pages of one page (no migrator registered): to the
    other node each time (*moving*), or to the node it is on. The median over *rounds*
    rounds of *calls* calls, so that a burst of noise on the host does not decide it."""
    with Machine(nodes="16M,16M", layout=layout) as m:
        p = m.spawn()
        a = p.mmap(PAGE_SIZE)
        p.write(a, b"x")
        for i in range(100):
            p.move_pages([a], [(i + 1) % 2 if moving else 0])
        per_round = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(calls):
                p.move_pages([a], [(i + 1) % 2 if moving else 0])
            per_round.append((time.perf_counter() - t0) / calls * 1e6)
        return float(np.median(per_round))
