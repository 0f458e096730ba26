"""Observations of a scenario, from the model or from a real kernel, in one format.

``Observation.steps[i]`` holds what step *i* returned (``move``: ``ret``, ``errno`` and
``status``, None for a status the call left unwritten; ``migrate``: ``ret`` and
``errno``; other steps: ``ok`` or an error). ``final[(p, r, first, n)]`` holds, for the
pages ``first .. first+n-1`` of region *r* as process *p* sees them, ``where`` (the
query statuses), ``thp`` (pages mapped by PMD-mapped 2 MiB folios: smaps'
AnonHugePages) and ``hash`` (a checksum per page).
``vmstat`` is the five migration counters' deltas.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..constants import PAGE_SIZE
from .scenario import UNMAPPED, UNMAPPED_ADDR, Scenario, page_hash, pattern, script_lines

if TYPE_CHECKING:  # pragma: no cover
    from ..process import Process

VMSTAT = (
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
)
#: the guest's marker for a status the kernel did not write
UNWRITTEN = 12345


@dataclass
class Observation:
    """What one driver saw of one scenario."""

    steps: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    vmstat: tuple = ()
    error: str = ""  #: the driver could not run the scenario (why)


def run_model(sc: Scenario, nodes: str = "320M,320M", kernel: str | None = None) -> Observation:
    """Run *sc* on a model machine (cpu-serial, the vanilla kernel's copy) following
    kernel version *kernel* (None: the newest the model supports)."""
    from .. import MPOL_MF_MOVE, Machine

    obs = Observation()
    with Machine(nodes=nodes, cpu="cpu-serial", kernel=kernel) as m:
        procs: dict[str, Any] = {}
        base: dict = {}
        pins: dict = {}
        v0 = dict(m.vmstat)
        for i, s in enumerate(sc.steps):
            a = s.args
            p: Any = procs.get(s.proc)
            try:
                if s.op == "spawn":
                    procs[s.proc] = m.spawn(
                        uid=a["uid"], cap_sys_nice=a["nice"], cap_sys_ptrace=a["ptrace"]
                    )
                elif s.op == "mmap":
                    base[(s.proc, a["r"])] = p.mmap(
                        a["pages"] * PAGE_SIZE,
                        node=a["node"],
                        folio_size=(2 << 20) if a["thp"] else PAGE_SIZE,
                        shared=a["shared"],
                        populate=a["populate"],
                    )
                elif s.op == "fill":
                    free = m.nodes[a["node"]].free_pages
                    base[(s.proc, a["r"])] = p.mmap(
                        max(1, free - a["leave"]) * PAGE_SIZE, node=a["node"]
                    )
                elif s.op == "write":
                    p.write(
                        base[(s.proc, a["r"])] + a["page"] * PAGE_SIZE,
                        pattern(a["seed"], a["page"]),
                    )
                elif s.op == "read":
                    p.read(base[(s.proc, a["r"])] + a["page"] * PAGE_SIZE, 1)
                elif s.op == "pin":
                    pins[(s.proc, a["r"], a["page"])] = p.pin(
                        base[(s.proc, a["r"])] + a["page"] * PAGE_SIZE
                    )
                elif s.op == "unpin":
                    pins.pop((s.proc, a["r"], a["page"])).release()
                elif s.op == "share":
                    n = (
                        a["pages"]
                        if a["pages"] is not None
                        else sc.regions()[a["r"]]["pages"] - a["first"]
                    )
                    q = procs[a["into"]]
                    at = p.share(
                        base[(s.proc, a["r"])] + a["first"] * PAGE_SIZE, n * PAGE_SIZE, into=q
                    )
                    base[(a["into"], a["r"])] = at - a["first"] * PAGE_SIZE
                elif s.op == "fork":
                    fork = getattr(p, "fork", None)
                    if fork is None:
                        raise NotImplementedError("fork() is not modelled")
                    procs[a["child"]] = fork()
                    for (pp, r), addr in list(base.items()):
                        if pp == s.proc:
                            base[(a["child"], r)] = addr
                elif s.op == "exit":
                    p.exit()
                elif s.op == "dumpable":
                    p.set_dumpable(a["dumpable"])
                elif s.op == "munmap":
                    p.munmap(
                        base[(s.proc, a["r"])] + a["first"] * PAGE_SIZE, a["pages"] * PAGE_SIZE
                    )
                elif s.op == "move":
                    who = s.proc if a["pid"] is None else a["pid"]
                    addrs = [
                        UNMAPPED_ADDR
                        if e == UNMAPPED
                        else e & ((1 << 64) - 1)  # a raw address, as a pointer holds it
                        if isinstance(e, int)
                        else base.get((who, e[0]), base.get((s.proc, e[0]), UNMAPPED_ADDR))
                        + e[1] * PAGE_SIZE
                        for e in a["entries"]
                    ]
                    pid = _pid(procs, a["pid"])
                    try:
                        r = p.move_pages(addrs, a["nodes"], flags=a["flags"], pid=pid)
                        obs.steps[i] = dict(ret=r.ret, errno=0, status=list(r.status))
                    except OSError as exc:
                        st = getattr(exc, "status", None) or [None] * len(addrs)
                        obs.steps[i] = dict(ret=-1, errno=exc.errno, status=list(st))
                    continue
                elif s.op == "migrate":
                    pid = _pid(procs, a["pid"])
                    try:
                        obs.steps[i] = dict(
                            ret=p.migrate_pages(a["old"], a["new"], pid=pid), errno=0
                        )
                    except OSError as exc:
                        obs.steps[i] = dict(ret=-1, errno=exc.errno)
                    continue
                obs.steps[i] = dict(ok=True)
            except NotImplementedError as exc:
                obs.error = f"step {i} ({s.op}): {exc}"
                return obs
            except OSError as exc:
                obs.steps[i] = dict(ok=False, errno=exc.errno)
        obs.vmstat = tuple(m.vmstat[k] - v0[k] for k in VMSTAT)
        for tag in (t for _, t in script_lines(sc) if t[0] == "observe"):
            _, pp, r, first, n = tag
            p = procs[pp]
            addrs = [base[(pp, r)] + (first + k) * PAGE_SIZE for k in range(n)]
            where = p.move_pages(addrs, None, flags=MPOL_MF_MOVE).status
            obs.final[(pp, r, first, n)] = dict(
                where=list(where),
                thp=_thp_pages(p, addrs),
                hash=[page_hash(p.read(x, PAGE_SIZE)) for x in addrs],
            )
        for pin in pins.values():
            pin.release()
    return obs


def _pid(procs: dict, slot: int | None) -> int:
    """0 for the caller, the pid of a scenario's process, or a pid nobody has."""
    if slot is None:
        return 0
    return procs[slot].pid if slot in procs else 999999


def _thp_pages(p: Process, addrs: list[int]) -> int:
    """Pages of *addrs* mapped by a PMD: in a 2 MiB folio all of which this process still
    maps (what /proc/PID/smaps calls AnonHugePages; a THP partly unmapped is mapped by
    PTEs, and counts for nothing there)."""
    import numpy as np

    from ..constants import HPAGE_PMD_ORDER

    vi, idx = p.mm._translate(np.asarray(addrs, dtype=np.int64))
    _, nid, pfn, _ = p.mm._ptes(vi, idx)
    n = 0
    for k in range(len(addrs)):
        if pfn[k] < 0 or p.machine.nodes[int(nid[k])].order[pfn[k]] != HPAGE_PMD_ORDER:
            continue
        obj = p.mm._vmas[int(vi[k])].obj
        off = int(pfn[k] & ((1 << HPAGE_PMD_ORDER) - 1))
        rng = slice(int(idx[k]) - off, int(idx[k]) - off + (1 << HPAGE_PMD_ORDER))
        # a PMD maps the folio whole: every page mapped, none copied on a write
        whole = (obj.mapcount[rng] > 0) & (
            obj.pfn[rng] == np.arange(pfn[k] - off, pfn[k] - off + (1 << HPAGE_PMD_ORDER))
        )
        n += int(whole.all())
    return n


def parse_guest(sc: Scenario, lines: list[str]) -> Observation:
    """The observation of *sc* from the guest's KC lines (``KC name index payload``)."""
    obs = Observation()
    tags = [t for _, t in script_lines(sc)]
    seen_done = False
    harness = 0  # the guest's own pages that its migrate_pages calls moved
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[1] != sc.name:
            continue
        idx, payload = parts[2], parts[3]
        if idx == "-":
            seen_done = True
            if payload != "done=0":
                obs.error = f"the scenario's processes ended with {payload}"
            continue
        tag = tags[int(idx)]
        kv = dict(x.split("=", 1) for x in payload.split() if "=" in x)
        if tag[0] == "step":
            step = sc.steps[tag[1]]
            if step.op == "move":
                st = [int(x) for x in kv.get("status", "").split(",") if x]
                obs.steps[tag[1]] = dict(
                    ret=int(kv["ret"]),
                    errno=int(kv["errno"]),
                    status=[None if x == UNWRITTEN else x for x in st],
                )
            elif step.op == "migrate":
                obs.steps[tag[1]] = dict(ret=int(kv["ret"]), errno=int(kv["errno"]))
                harness += int(kv.get("harness", 0))
            elif "err" in kv:
                if kv["err"].lstrip("-").isdigit():
                    obs.steps[tag[1]] = dict(ok=False, errno=int(kv["err"]))
                else:
                    obs.error = f"step {tag[1]} ({step.op}): {kv['err']}"
            else:
                obs.steps[tag[1]] = dict(ok=True)
        elif tag[0] == "vmstat":
            obs.vmstat = tuple(int(x) for x in kv["vmstat"].split(","))
        elif tag[0] == "observe":
            key = tuple(tag[1:])
            obs.final[key] = dict(
                where=[int(x) for x in kv["where"].split(",")],
                thp=int(kv["thp_kb"]) // 4,
                hash=[int(x) for x in kv["hash"].split(",")],
            )
    if obs.vmstat and harness:
        # the harness's pages are the guest's, not the scenario's: they are counted by
        # node before and after each call (numa_maps) and taken out of pgmigrate_success
        obs.vmstat = (obs.vmstat[0] - harness, *obs.vmstat[1:])
    if not seen_done and not obs.error:
        obs.error = "the guest printed no end for this scenario"
    return obs


def errno_name(e: int) -> str:
    """``-14`` -> ``-EFAULT``; nodes stay numbers."""
    if e is None:
        return "-"
    if e >= 0:
        return str(e)
    return "-" + _errno.errorcode.get(-e, str(-e))


__all__ = ["VMSTAT", "Observation", "errno_name", "parse_guest", "run_model"]
