"""``offload bench compare A.json B.json``: which cells changed, and whether the change
is significant (Welch's t-test at 95% over the runs of each side, as pyperf does)."""

from __future__ import annotations

import functools
import json
import math
import statistics
from importlib import resources
from typing import Any

from offload.errors import BadArgument

from .stats import significant

#: What makes two rows the same cell.
KEY = ("suite", "backend", "folio_size", "batch_pages", "direction")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    text = resources.files(__package__).joinpath("bench-schema.json").read_text()
    schema = json.loads(text)
    return jsonschema.Draft202012Validator(schema)


def load(path: str) -> dict:
    """Read an ``offload bench --json`` document, or say what is wrong with it.

    The document is checked against the schema (docs/bench-schema.json) before anything
    reads it; ``NaN`` and ``Infinity`` are not JSON and are refused.

    Raises
    ------
    BadArgument
        Unreadable, not JSON, not an ``offload-bench/1`` document, or not valid against
        its schema (the first error, with where it is).
    """
    try:
        with open(path) as f:
            doc = json.load(f, parse_constant=_no_constant)
    except OSError as exc:
        raise BadArgument(f"{path}: cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BadArgument(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise BadArgument(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != "offload-bench/1":
        raise BadArgument(f"{path}: not an offload-bench/1 document (offload bench --json)")
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        where = "/".join(str(x) for x in e.absolute_path) or "the top level"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = e.message if len(e.message) <= 160 else e.message[:157] + "..."
        raise BadArgument(f"{path}: not a valid offload-bench/1 document: at {where}: {msg}{more}")
    return doc


def _runs(row: dict) -> list[float] | None:
    """The per-run GB/s of a row, where the row has runs (the scale suite has one
    figure, no runs)."""
    g = row.get("gbps")
    if not isinstance(g, list) or not g:
        return None
    return [float(x) for x in g]


def compare(a: dict, b: dict) -> list[dict]:
    """One row per cell present in both documents: medians, B/A, t and the verdict."""
    rows_a = {tuple(r.get(k) for k in KEY): r for r in a.get("results", []) if _runs(r)}
    out = []
    for r in b.get("results", []):
        key = tuple(r.get(k) for k in KEY)
        ra = rows_a.get(key)
        gb = _runs(r)
        if ra is None or gb is None:
            continue
        ga = _runs(ra)
        assert ga is not None
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
                # two sides with no spread at all give an infinite t: strict JSON
                # has no infinity, so it is said in words
                "t": t if math.isfinite(t) else "no spread",
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
