"""Comparing the model's observations with the real kernel's.

A scenario's verdict is ``match``, ``departure`` (every difference is one the README
lists under "Where the model departs from the kernel, on purpose", named by that
line) or ``mismatch`` (a bug of the model, or of the harness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from errno import EBUSY, EFAULT, ENOMEM

from .observe import VMSTAT, Observation, errno_name
from .scenario import Scenario, Step

#: Deliberate departures: key -> the start of the README line that documents it.
DEPARTURES = {
    "ret_counts_entries": "`ret` counts the entries not migrated (`ret_counts_entries`)",
    "unwritten_statuses": "A group with failures does not stop the call (`unwritten_statuses`)",
    "one_folio_entries": "Entries into one folio move it once (`one_folio_entries`)",
    "enomem_call": "When a group of `move_pages` entries runs out of memory on the target node",
    "migrate_counts_pages": "`migrate_pages` returns base pages not moved",
}


@dataclass
class Verdict:
    """The comparison of one scenario."""

    name: str
    source: str
    #: "match", "departure", "mismatch", "error", or "flaky" (it differed once, and a
    #: second run of the real kernel agreed with the model)
    verdict: str
    departures: list = field(default_factory=list)  #: keys of DEPARTURES
    differences: list = field(default_factory=list)  #: human-readable lines
    #: per departure: "[key] what the kernel and the model gave", every field that differs
    evidence: list = field(default_factory=list)


def compare(sc: Scenario, model: Observation, kernel: Observation) -> Verdict:
    """Compare one scenario's observations."""
    v = Verdict(sc.name, sc.source, "match")
    if kernel.error or model.error:
        v.verdict = "error"
        v.differences = [
            x
            for x in (
                f"kernel: {kernel.error}" if kernel.error else "",
                f"model: {model.error}" if model.error else "",
            )
            if x
        ]
        return v
    deps: set[str] = set()
    diffs: list[str] = []
    evidence: list[str] = []
    for i, s in enumerate(sc.steps):
        k, m = kernel.steps.get(i), model.steps.get(i)
        if k == m:
            continue
        before = set(deps)
        if (
            s.op == "move"
            and k is not None
            and m is not None
            and _move_explained(sc, s, k, m, deps)
        ):
            keys = ",".join(sorted(deps - before)) or "shape only"
            evidence.append(f"[{keys}] step {i} {s.op}: kernel {_fmt(k)} / model {_fmt(m)}")
            continue
        if (
            s.op == "migrate"
            and k is not None
            and m is not None
            and k.get("errno") == m.get("errno") == 0
            and k["ret"] > 0
            and m["ret"] > 0
        ):
            deps.add("migrate_counts_pages")
            evidence.append(
                f"[migrate_counts_pages] step {i} {s.op}: kernel {_fmt(k)} / model {_fmt(m)}"
            )
            continue
        if (
            s.op == "migrate"
            and k is not None
            and m is not None
            and sc.shape_only
            and k.get("errno") == m.get("errno")
            and (k["ret"] > 0) == (m["ret"] > 0)
        ):
            continue
        diffs.append(f"step {i} {s.op}: kernel {_fmt(k)} / model {_fmt(m)}")
    if kernel.vmstat != model.vmstat:
        vm = ", ".join(
            f"{n} kernel {a} model {b}"
            for n, a, b in zip(VMSTAT, kernel.vmstat, model.vmstat)
            if a != b
        )
        if not (sc.shape_only and _same_signs(kernel.vmstat, model.vmstat)):
            diffs.append(f"vmstat: {vm}")
    for key in sorted(set(kernel.final) | set(model.final)):
        k, m = kernel.final.get(key), model.final.get(key)
        if k is None or m is None:
            diffs.append(f"process {key[0]} region {key[1]}: observed by one driver only")
            continue
        for what in ("where", "thp", "hash"):
            if k[what] == m[what]:
                continue
            if sc.shape_only and what == "where" and set(k[what]) == set(m[what]):
                continue
            if what == "hash":
                bad = [key[2] + j for j, (a, b) in enumerate(zip(k[what], m[what])) if a != b]
                diffs.append(f"process {key[0]} region {key[1]}: bytes differ on pages {bad[:8]}")
            elif what == "where":
                diffs.append(
                    f"process {key[0]} region {key[1]} pages {key[2]}+: where kernel "
                    f"{_statuses(k[what])} / model {_statuses(m[what])}"
                )
            else:
                diffs.append(
                    f"process {key[0]} region {key[1]}: THP pages kernel {k[what]} / "
                    f"model {m[what]}"
                )
    v.differences = diffs
    v.departures = sorted(deps)
    v.evidence = evidence
    v.verdict = "mismatch" if diffs else ("departure" if deps else "match")
    return v


def _move_explained(sc: Scenario, s: Step, k: dict, m: dict, deps: set) -> bool:
    """Whether a move step's difference is a documented departure (and which)."""
    if (
        k["errno"] == ENOMEM
        and m["errno"] == 0
        and all(x is None or x == -EBUSY for x in k["status"])
        and -ENOMEM in m["status"]
    ):
        # the kernel fails the call when a group runs out of memory; the model reports
        # the entries that did not fit
        deps.add("enomem_call")
        if -EBUSY in k["status"]:  # entries into a folio isolated by an earlier one
            deps.add("one_folio_entries")
        return True
    if k["errno"] != m["errno"]:
        return False
    ks, ms = k["status"], m["status"]
    if sc.shape_only:
        if not set(x for x in ks if x is not None) <= set(ms):
            return False
        if (k["ret"] != 0) != (m["ret"] != 0):
            deps.add("ret_counts_entries")  # the kernel counts failed folios, not entries
        return True
    if ks == ms:
        # same statuses, different ret: the kernel counts folios that failed to migrate,
        # the model every entry that is not on its target node
        deps.add("ret_counts_entries")
        return True
    ok = True
    for a, b in zip(ks, ms):
        if a == b:
            continue
        if a is None:  # the kernel left it unwritten after a failed group
            deps.add("unwritten_statuses")
        elif a == -EBUSY and b is not None and (b >= 0 or b == -EFAULT):
            # -EBUSY: the folio was isolated already; the model gives the entry what its
            # page is after the move (the node, or the zero page a split left there)
            deps.add("one_folio_entries")
        else:
            ok = False
    if ok and k["ret"] != m["ret"]:
        deps.add("ret_counts_entries")
    return ok


def _same_signs(a: tuple, b: tuple) -> bool:
    return all((x > 0) == (y > 0) for x, y in zip(a, b))


def _statuses(st: list) -> str:
    if len(st) > 12:
        return "[" + ",".join(errno_name(x) for x in st[:12]) + f",... ({len(st)})]"
    return "[" + ",".join(errno_name(x) for x in st) + "]"


def _fmt(o: dict | None) -> str:
    if o is None:
        return "nothing"
    if "status" in o:
        return f"ret={o['ret']} errno={o['errno']} status={_statuses(o['status'])}"
    if "ret" in o:
        return f"ret={o['ret']} errno={o['errno']}"
    return "ok" if o.get("ok") else f"errno={o.get('errno')}"


__all__ = ["DEPARTURES", "Verdict", "compare"]
