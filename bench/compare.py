"""``offload bench compare A.json B.json``: which cells changed, and whether the change
is significant: Welch's t-test over the runs of each side (as pyperf does), for GB/s and
for the ratios to ``cpu-serial`` and to memcpy, with the false discovery rate controlled
over every test (Benjamini-Hochberg)."""

from __future__ import annotations

import functools
import json
import math
import statistics
from importlib import resources
from typing import Any

from offload.errors import BadArgument

from .stats import benjamini_hochberg, welch

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


def _ratio_runs(doc: dict, row: dict, metric: str) -> list[float] | None:
    """Per-run ratios of *row*: to the ``cpu-serial`` row of its suite and size
    (``ratio_to_serial``), or to the memcpy reference on its thread count
    (``ratio_to_memcpy_t``), run by run where both were timed in the same rounds (the
    rows take turns, one run each); None where they were not."""
    runs = _runs(row)
    if runs is None:
        return None
    if metric == "ratio_to_serial":
        base = next(
            (
                _runs(r)
                for r in doc.get("results", [])
                if r.get("backend") == "cpu-serial"
                and r.get("suite") == row.get("suite")
                and r.get("folio_size") == row.get("folio_size")
            ),
            None,
        )
    else:
        from .references import round_passes

        t = row.get("threads")
        refs = doc.get("references") or {}
        # the passes of the row's own rounds (its folio size), round by round the faster
        # of T threads and fewer, as the row's ratio was taken; else (a document from
        # before passes were kept per size) the passes of the whole run
        passes = round_passes(refs, "memcpy", t, row.get("folio_size", 0)) if t else None
        if passes is not None:
            base = passes.tolist()
        else:
            ref = refs.get("memcpy", {}).get(str(t)) if t else None
            base = ref.get("runs") if isinstance(ref, dict) else None
    own = row.get("backend") == "cpu-serial" and metric == "ratio_to_serial"
    if own or not base or len(base) != len(runs):
        return None
    return [x / y for x, y in zip(runs, base) if y > 0] or None


#: What is compared, per cell: GB/s, and the ratios the README says to compare
METRICS = ("gbps", "ratio_to_serial", "ratio_to_memcpy_t")


def compare(a: dict, b: dict, fdr: float = 0.05) -> list[dict]:
    """One row per cell present in both documents: per metric (GB/s, the ratio to
    ``cpu-serial``, the ratio to memcpy on the row's threads) the medians, B/A, Welch's
    t and p, and the Benjamini-Hochberg q-value over every test of the comparison; a
    change is significant when its q is at most *fdr* (the false discovery rate over all
    cells, not 5% per cell). ``verdict`` is GB/s's."""
    rows_a = {tuple(r.get(k) for k in KEY): r for r in a.get("results", []) if _runs(r)}
    out = []
    tests: list[tuple[dict[str, Any], str]] = []
    for r in b.get("results", []):
        key = tuple(r.get(k) for k in KEY)
        ra = rows_a.get(key)
        if ra is None or _runs(r) is None:
            continue
        cell: dict = {
            "suite": r.get("suite"),
            "backend": r.get("backend"),
            "folio_size": r.get("folio_size"),
            "metrics": {},
        }
        for metric in METRICS:
            if metric == "gbps":
                ga, gb = _runs(ra), _runs(r)
            else:
                ga, gb = _ratio_runs(a, ra, metric), _ratio_runs(b, r, metric)
            if ga is None or gb is None:
                continue
            ma, mb = statistics.median(ga), statistics.median(gb)
            t, p = welch(ga, gb)
            m: dict[str, Any] = {
                "a": ma,
                "b": mb,
                "change": mb / ma if ma else None,
                # two sides with no spread at all give an infinite t: strict JSON has no
                # infinity, so it is said in words
                "t": t if math.isfinite(t) else "no spread",
                "p": p,
                "runs": (len(ga), len(gb)),
            }
            cell["metrics"][metric] = m
            tests.append((m, metric))
        g = cell["metrics"]["gbps"]
        cell.update(a_gbps=g["a"], b_gbps=g["b"], change=g["change"], t=g["t"], runs=g["runs"])
        out.append(cell)
    qs = benjamini_hochberg([m["p"] for m, _ in tests])
    for (m, _), q in zip(tests, qs):
        m["q"] = q
        if min(m["runs"]) < 2:
            m["verdict"] = "too few runs"
        elif q > fdr:
            m["verdict"] = "not significant"
        else:
            m["verdict"] = "faster" if m["b"] > m["a"] else "slower"
    for cell in out:
        cell["verdict"] = cell["metrics"]["gbps"]["verdict"]
        cell["q"] = cell["metrics"]["gbps"]["q"]
    return out


def slowdowns(cells: list[dict], pct: float) -> list[str]:
    """The significant slowdowns (any metric) of more than *pct* percent, described."""
    found = []
    for c in cells:
        for metric, m in c["metrics"].items():
            if m["verdict"] == "slower" and m["change"] is not None and m["change"] < 1 - pct / 100:
                found.append(
                    f"{c['backend']} {c['folio_size']} B {metric}: {m['a']:.3f} -> {m['b']:.3f} "
                    f"({100 * (m['change'] - 1):+.1f}%, q={m['q']:.3g})"
                )
    return found


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
