"""``offload bench compare A.json B.json``: which cells changed, and whether the change
is significant (Welch's t-test at 95% over the runs of each side, as pyperf does)."""

from __future__ import annotations

import json
import statistics

from offload.errors import BadArgument

from .stats import significant

#: What makes two rows the same cell.
KEY = ("suite", "backend", "folio_size", "batch_pages", "direction")


def load(path: str) -> dict:
    """Read an ``offload bench --json`` document, or say what is wrong with it."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as exc:
        raise BadArgument(f"{path}: cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BadArgument(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != "offload-bench/1":
        raise BadArgument(f"{path}: not an offload-bench/1 document (offload bench --json)")
    return doc


def compare(a: dict, b: dict) -> list[dict]:
    """One row per cell present in both documents: medians, B/A, t and the verdict."""
    rows_a = {tuple(r.get(k) for k in KEY): r for r in a.get("results", []) if r.get("gbps")}
    out = []
    for r in b.get("results", []):
        key = tuple(r.get(k) for k in KEY)
        ra = rows_a.get(key)
        if ra is None or not r.get("gbps"):
            continue
        ga, gb = [float(x) for x in ra["gbps"]], [float(x) for x in r["gbps"]]
        ma, mb = statistics.median(ga), statistics.median(gb)
        sig, t = significant(ga, gb)
        if len(ga) < 2 or len(gb) < 2:
            verdict = "too few runs"
        elif not sig:
            verdict = "not significant"
        else:
            verdict = "faster" if mb > ma else "slower"
        out.append(
            {
                "suite": r.get("suite"),
                "backend": r.get("backend"),
                "folio_size": r.get("folio_size"),
                "a_gbps": ma,
                "b_gbps": mb,
                "change": mb / ma if ma else None,
                "t": t,
                "runs": (len(ga), len(gb)),
                "verdict": verdict,
            }
        )
    return out


def machine_notes(a: dict, b: dict) -> list[str]:
    """What differs between the two documents' machines and settings."""
    notes = []
    ma, mb = a.get("machine", {}), b.get("machine", {})
    for k in ("cpu_model", "cpus", "numpy", "python"):
        if ma.get(k) != mb.get(k):
            notes.append(f"{k} differs: {ma.get(k)!r} vs {mb.get(k)!r}")
    for k in ("layout", "batch_pages"):
        if a.get(k) != b.get(k):
            notes.append(f"{k} differs: {a.get(k)!r} vs {b.get(k)!r}")
    ra, rb = a.get("roofline_gbps"), b.get("roofline_gbps")
    if ra and rb and abs(rb / ra - 1) > 0.1:
        notes.append(
            f"the memcpy roofline moved {100 * (rb / ra - 1):+.0f}% between the runs: the "
            "machine itself changed speed; compare the ratios to cpu-serial rather than GB/s"
        )
    return notes
