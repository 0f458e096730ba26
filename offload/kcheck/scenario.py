"""Kernel-parity scenarios: steps written once, run through the model and a real kernel.

A :class:`Scenario` is a list of steps over numbered processes and regions (a region
is one mapping; its pages are numbered from 0). Entries of ``move`` name pages as
``(region, page)`` in the target process, or :data:`UNMAPPED`. Every scenario ends
with the same observations, taken by both drivers: the vmstat deltas, then for every
process and every region it maps, where each page is (a query), how many of its pages
sit in 2 MiB folios, and a hash of each page's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..constants import MPOL_MF_MOVE, PAGE_SIZE
from ..errors import BadArgument

#: An address mapped in no process (the same in the model and in the guest).
UNMAPPED = "unmapped"
UNMAPPED_ADDR = 0x10000

Entry = Union[tuple, str, int]  # noqa: UP007 - a runtime alias, evaluated on 3.10


@dataclass(frozen=True)
class Step:
    """One step: an operation, the process that performs it and its arguments."""

    op: str
    proc: int
    args: dict = field(default_factory=dict)


def spawn(p: int, uid: int = 1000, nice: bool = False, ptrace: bool = False) -> Step:
    """Process *p* with *uid*, CAP_SYS_NICE (*nice*) and CAP_SYS_PTRACE (*ptrace*)."""
    return Step("spawn", p, dict(uid=uid, nice=nice, ptrace=ptrace))


def mmap(
    p: int,
    r: int,
    pages: int,
    thp: bool = False,
    populate: bool = True,
    shared: bool = False,
    node: int = 0,
) -> Step:
    """Process *p* maps region *r* of *pages* pages on *node* (2 MiB folios with *thp*)."""
    return Step(
        "mmap", p, dict(r=r, pages=pages, thp=thp, populate=populate, shared=shared, node=node)
    )


def fill(p: int, r: int, node: int, leave_pages: int) -> Step:
    """Map and populate a region that leaves only *leave_pages* free on *node* (its
    size depends on the machine, so it is not observed at the end)."""
    return Step("fill", p, dict(r=r, node=node, leave=leave_pages))


def write(p: int, r: int, page: int, seed: int) -> Step:
    """Process *p* fills page *page* of region *r* with the pattern of *seed*."""
    return Step("write", p, dict(r=r, page=page, seed=seed))


def read(p: int, r: int, page: int) -> Step:
    """Process *p* reads one byte of page *page* of region *r* (a read fault)."""
    return Step("read", p, dict(r=r, page=page))


def pin(p: int, r: int, page: int) -> Step:
    """Process *p* pins page *page* of region *r* (vmsplice into a pipe in the guest)."""
    return Step("pin", p, dict(r=r, page=page))


def unpin(p: int, r: int, page: int) -> Step:
    """Process *p* drops its pin of page *page* of region *r*."""
    return Step("unpin", p, dict(r=r, page=page))


def share(p: int, r: int, into: int, first: int = 0, pages: int | None = None) -> Step:
    """Process *p* maps pages ``first ..`` of its shared region *r* into process *into*."""
    return Step("share", p, dict(r=r, into=into, first=first, pages=pages))


def fork(p: int, child: int) -> Step:
    """Process *p* forks; the child is process *child*."""
    return Step("fork", p, dict(child=child))


def exit_task(p: int) -> Step:
    """Process *p* exits; nobody reaps it, so it stays a zombie (no memory, its pid
    found). The leader waits until the kernel shows it as one."""
    return Step("exit", p)


def set_dumpable(p: int, dumpable: bool) -> Step:
    """Process *p* calls ``prctl(PR_SET_DUMPABLE, dumpable)``."""
    return Step("dumpable", p, dict(dumpable=dumpable))


def munmap(p: int, r: int, first: int, pages: int) -> Step:
    """Process *p* unmaps pages ``first .. first+pages-1`` of region *r*."""
    return Step("munmap", p, dict(r=r, first=first, pages=pages))


def move(
    p: int,
    entries: list[Entry],
    nodes: list[int] | None,
    flags: int = MPOL_MF_MOVE,
    pid: int | None = None,
) -> Step:
    """Process *p* calls move_pages on *entries* ((region, page) of process *pid*, or its
    own; an int is a raw address, any 64-bit value a pointer holds) to *nodes* (None: a
    query)."""
    return Step(
        "move",
        p,
        dict(
            entries=list(entries),
            nodes=None if nodes is None else list(nodes),
            flags=flags,
            pid=pid,
        ),
    )


def migrate(p: int, old: list[int], new: list[int], pid: int | None = None) -> Step:
    """Process *p* calls migrate_pages(*old* -> *new*) on process *pid* (or itself)."""
    return Step("migrate", p, dict(old=list(old), new=list(new), pid=pid))


@dataclass(frozen=True)
class Scenario:
    """A named scenario and where it comes from.

    Attributes
    ----------
    name : str
        Unique, short, ``[a-z0-9_]``.
    source : str
        What it is drawn from (man page, LTP test, selftest, an issue).
    steps : tuple of Step
    shape_only : bool
        Compare the set of status values and the sign of ``ret`` rather than exact
        values (for outcomes that depend on how much free memory a node has).
    """

    name: str
    source: str
    steps: tuple
    shape_only: bool = False

    def regions(self) -> dict[int, dict]:
        """Region number -> its mmap arguments (and the process that created it)."""
        out = {}
        for s in self.steps:
            if s.op == "mmap":
                out[s.args["r"]] = dict(s.args, proc=s.proc)
        return out

    def mapped_ranges(self) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """(process, region) -> the page ranges it still maps at the end."""
        regs = self.regions()
        maps: dict[tuple[int, int], set[int]] = {}
        for s in self.steps:
            a = s.args
            if s.op == "mmap":
                maps[(s.proc, a["r"])] = set(range(a["pages"]))
            elif s.op == "share":
                n = a["pages"] if a["pages"] is not None else regs[a["r"]]["pages"] - a["first"]
                maps[(a["into"], a["r"])] = set(range(a["first"], a["first"] + n))
            elif s.op == "fork":
                for (p, r), pages in list(maps.items()):
                    if p == s.proc:
                        maps[(a["child"], r)] = set(pages)
            elif s.op == "munmap":
                maps[(s.proc, a["r"])] -= set(range(a["first"], a["first"] + a["pages"]))
            elif s.op == "exit":
                for key in [k for k in maps if k[0] == s.proc]:
                    del maps[key]
        out = {}
        for key, pages in sorted(maps.items()):
            runs: list[tuple[int, int]] = []
            for pg in sorted(pages):
                if runs and runs[-1][0] + runs[-1][1] == pg:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((pg, 1))
            out[key] = runs
        return out


def pattern(seed: int, page: int) -> bytes:
    """The bytes ``write`` puts in a page (the guest computes the same)."""
    import numpy as np

    i = np.arange(PAGE_SIZE, dtype=np.int64)
    return ((seed * 131 + i * 7 + (i >> 8) + page) & 0xFF).astype(np.uint8).tobytes()


def page_hash(data: bytes) -> int:
    """A position-weighted 32-bit checksum of a page (the guest computes the same)."""
    import numpy as np

    i = np.arange(PAGE_SIZE, dtype=np.uint64)
    w = (i * np.uint64(2654435761) + np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64) + np.uint64(1)
    return int((b * w).sum() & np.uint64(0xFFFFFFFF))


def script_lines(sc: Scenario) -> list[tuple[str, tuple]]:
    """The guest's lines for one scenario, each with what it observes:
    ``("memfd",)``, ``("step", i)``, ``("vmstat",)`` or ``("observe", p, r, first, n)``."""
    out: list[tuple[str, tuple]] = []
    for r, a in sc.regions().items():
        if a["shared"]:
            out.append((f"memfd {r} {a['pages']}", ("memfd",)))
    for i, s in enumerate(sc.steps):
        out.append((_step_line(sc, s), ("step", i)))
    out.append(("vmstat", ("vmstat",)))
    for (p, r), runs in sc.mapped_ranges().items():
        for first, n in runs:
            out.append((f"on {p} observe {r} {first} {n} 1", ("observe", p, r, first, n)))
    return out


def to_script(scenarios: list[Scenario]) -> str:
    """The guest program's script for *scenarios* (see guest.c)."""
    lines: list[str] = []
    for sc in scenarios:
        lines.append(f"scenario {sc.name}")
        lines += [line for line, _ in script_lines(sc)]
        lines.append("end")
    return "\n".join(lines) + "\n"


def _step_line(sc: Scenario, s: Step) -> str:
    a = s.args
    if s.op == "spawn":
        return f"spawn {s.proc} {a['uid']} {int(a['nice'])} {int(a['ptrace'])}"
    if s.op == "mmap":
        return (
            f"on {s.proc} mmap {a['r']} {a['pages']} {9 if a['thp'] else 0} "
            f"{int(a['populate'])} {int(a['shared'])} {a['node']}"
        )
    if s.op == "fill":
        return f"on {s.proc} fill {a['r']} {a['node']} {a['leave']}"
    if s.op in ("write",):
        return f"on {s.proc} write {a['r']} {a['page']} {a['seed']}"
    if s.op in ("read", "pin", "unpin"):
        return f"on {s.proc} {s.op} {a['r']} {a['page']}"
    if s.op == "share":
        n = a["pages"] if a["pages"] is not None else sc.regions()[a["r"]]["pages"] - a["first"]
        return f"on {a['into']} share {a['r']} {a['first']} {n}"
    if s.op == "fork":
        return f"on {s.proc} fork {a['child']}"
    if s.op == "munmap":
        return f"on {s.proc} munmap {a['r']} {a['first']} {a['pages']}"
    if s.op == "move":
        query = a["nodes"] is None
        nodes = [0] * len(a["entries"]) if query else a["nodes"]
        toks = [_entry_token(e, n) for e, n in zip(a["entries"], nodes)]
        t = -1 if a["pid"] is None else a["pid"]
        return f"on {s.proc} move {t} {a['flags']} {int(query)} {len(toks)} " + " ".join(toks)
    if s.op == "migrate":
        t = -1 if a["pid"] is None else a["pid"]
        return f"on {s.proc} migrate {t} {_mask(a['old'])} {_mask(a['new'])}"
    if s.op == "exit":
        return f"on {s.proc} exit"
    if s.op == "dumpable":
        return f"on {s.proc} dumpable {int(a['dumpable'])}"
    raise BadArgument(f"unknown step {s.op!r}")


def _entry_token(e: Entry, node: int) -> str:
    """A move entry for the guest: ``U:NODE``, ``A:ADDR:NODE`` (a raw address, as the
    64-bit pattern a pointer holds) or ``R:P:NODE``."""
    if e == UNMAPPED:
        return f"U:{node}"
    if isinstance(e, int):
        return f"A:{e & ((1 << 64) - 1)}:{node}"
    return f"{e[0]}:{e[1]}:{node}"


def _mask(nodes: list[int]) -> int:
    m = 0
    for n in nodes:
        m |= 1 << n
    return m


__all__ = [
    "UNMAPPED",
    "Scenario",
    "Step",
    "exit_task",
    "fill",
    "fork",
    "migrate",
    "mmap",
    "move",
    "munmap",
    "page_hash",
    "pattern",
    "pin",
    "read",
    "set_dumpable",
    "share",
    "spawn",
    "to_script",
    "unpin",
    "write",
]
