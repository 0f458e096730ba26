"""Rendering benchmark results: the table, CSV, and the JSON document."""

from __future__ import annotations

import csv
import io
import json

from offload.sizes import format_size

SCHEMA = "offload-bench/1"


def document(machine: dict, roofline: float | None, results: list[dict], **extra) -> dict:
    """The JSON document of DESIGN.md."""
    doc = {"schema": SCHEMA, "machine": machine, "roofline_gbps": roofline, "results": results}
    doc.update(extra)
    return doc


def add_ratios(
    results: list[dict], roofline: float, h2d: float | None = None, baseline: str = "cpu-serial"
) -> None:
    """Add ``ratio_to_serial`` and ``ratio_to_roofline`` (and ``ratio_to_h2d``) to each row."""
    base = {
        (r["suite"], r["folio_size"]): r["gbps_median"] for r in results if r["backend"] == baseline
    }
    for r in results:
        b = base.get((r["suite"], r["folio_size"]))
        r["ratio_to_serial"] = r["gbps_median"] / b if b else None
        r["ratio_to_roofline"] = r["gbps_median"] / roofline if roofline else None
        if h2d:
            r["ratio_to_h2d"] = r["gbps_median"] / h2d


def table(
    results: list[dict],
    roofline: float | None,
    sizes: list[int],
    h2d: float | None = None,
    metric: str = "gbps",
    page_loop: float | None = None,
) -> str:
    """A plain-text table: one row per backend, one column per folio size.

    *metric* ``gbps`` shows GB/s median ± stdev with ratios; ``cpu`` shows CPU seconds
    per GB moved and the CPU utilisation during the move.
    """
    backends = list(dict.fromkeys(r["backend"] for r in results))
    cells = {(r["backend"], r["folio_size"]): r for r in results}
    head = ["backend"] + [format_size(s) for s in sizes]
    rows = [head]
    for b in backends:
        row = [b]
        for s in sizes:
            r = cells.get((b, s))
            if r is None:
                row.append("-")
                continue
            if metric == "cpu":
                row.append(f"{r['cpu_s_per_gb']:.3f} s/GB ({100 * r['cpu_utilization']:.0f}%)")
                continue
            text = f"{r['gbps_median']:.2f}±{r['gbps_stdev']:.2f}"
            if r.get("ratio_to_serial") is not None and b != "cpu-serial":
                text += f" x{r['ratio_to_serial']:.2f}"
            if "cpu_fraction" in r:
                text += f" cpu{r['cpu_fraction']:.2f}"
            if r.get("noisy"):
                text += "~"
            row.append(text)
        rows.append(row)
    if roofline:
        rows.append(["memcpy roofline"] + [f"{roofline:.2f}"] * len(sizes))
    if page_loop:
        rows.append(["C page loop (random)"] + [f"{page_loop:.2f}"] * len(sizes))
    if h2d:
        rows.append(["cudaMemcpy H2D"] + [f"{h2d:.2f}"] * len(sizes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(results: list[dict]) -> str:
    """Copy fraction and engine overhead per folio, one line per result."""
    out = []
    for r in results:
        out.append(
            f"{r['backend']:>28} {format_size(r['folio_size']):>5}: copy fraction "
            f"{r['copy_fraction']:.2f}, overhead {r['overhead_us_per_folio']:.3f} us/folio, "
            f"verified={r['verified']}"
        )
    return "\n".join(out)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def to_csv(results: list[dict]) -> str:
    """One CSV line per result (lists joined with ';')."""
    if not results:
        return ""
    keys = list(dict.fromkeys(k for r in results for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow(
            {k: ";".join(f"{x:.4f}" for x in v) if isinstance(v, list) else v for k, v in r.items()}
        )
    return buf.getvalue()
