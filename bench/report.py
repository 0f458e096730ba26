"""Rendering benchmark results: the tables (through ``offload.console``), CSV, and the
JSON document (its schema: docs/bench-schema.json)."""

from __future__ import annotations

import csv
import datetime
import io
import json
import sys
from importlib import metadata

from rich.console import RenderableType

from offload.console import table as make_table
from offload.sizes import format_size

SCHEMA = "offload-bench/1"


def tool_version() -> str:
    """The installed folio-offload version."""
    try:
        return metadata.version("folio-offload")
    except metadata.PackageNotFoundError:  # pragma: no cover - a tree never installed
        return "unknown"


def document(machine: dict, roofline: float | None, results: list[dict], **extra) -> dict:
    """The JSON document: schema, tool, date, command line, machine, rooflines, results
    and whatever the suite adds (see docs/bench-schema.json)."""
    doc = {
        "schema": SCHEMA,
        "tool": {"name": "folio-offload", "version": tool_version()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["offload", *sys.argv[1:]]),
        "machine": machine,
        "roofline_gbps": roofline,
        "results": results,
    }
    doc.update(extra)
    return doc


def add_ratios(
    results: list[dict],
    roofline: float | None,
    h2d: float | None = None,
    baseline: str = "cpu-serial",
    roofline_mt: float | None = None,
) -> None:
    """Add ``ratio_to_serial``, ``ratio_to_roofline`` (and the multi-threaded and H2D
    ones) to each row."""
    base = {
        (r["suite"], r["folio_size"]): r["gbps_median"] for r in results if r["backend"] == baseline
    }
    for r in results:
        b = base.get((r["suite"], r["folio_size"]))
        r["ratio_to_serial"] = r["gbps_median"] / b if b else None
        r["ratio_to_roofline"] = r["gbps_median"] / roofline if roofline else None
        if roofline_mt:
            r["ratio_to_roofline_mt"] = r["gbps_median"] / roofline_mt
        if h2d:
            r["ratio_to_h2d"] = r["gbps_median"] / h2d


def cell(r: dict, metric: str = "gbps") -> str:
    """One cell of the table: ``median ±MAD xratio`` (``~`` when noisy)."""
    if metric == "cpu":
        copy = r.get("copy_cpu_s_per_gb")
        text = f"{r['cpu_s_per_gb']:.3f} s/GB"
        if copy is not None:
            text += f", copy {copy:.3f}"
        text += f" ({100 * r['cpu_utilization']:.0f}%)"
        return text + ("~" if r.get("noisy") else "")
    text = f"{r['gbps_median']:.2f} ±{r.get('gbps_mad', 0.0):.2f}"
    if r.get("ratio_to_serial") is not None and r["backend"] != "cpu-serial":
        text += f" x{r['ratio_to_serial']:.2f}"
    if "cpu_fraction" in r:
        text += f" cpu{r['cpu_fraction']:.2f}"
    if r.get("noisy"):
        text += "~"
    if r.get("gbps_outliers"):
        text += "!"
    return text


def table(
    results: list[dict],
    sizes: list[int],
    title: str,
    metric: str = "gbps",
    lines: list[tuple[str, float | str | list[str]]] | None = None,
    caption: str | None = None,
) -> RenderableType:
    """One row per backend, one column per folio size; *lines* are reference rows (a
    label and one GB/s figure for every column, as the rooflines, or a list of texts,
    one per column)."""
    backends = list(dict.fromkeys(r["backend"] for r in results))
    cells = {(r["backend"], r["folio_size"]): r for r in results}
    emulated = {r["backend"] for r in results if r.get("emulated")}
    rows: list[list[str]] = []
    for b in backends:
        label = f"{b} (emulated)" if b in emulated else b
        rows.append(
            [label] + [cell(cells[b, s], metric) if (b, s) in cells else "-" for s in sizes]
        )
    for label, value in lines or []:
        if isinstance(value, list):
            rows.append([label, *value])
            continue
        text = value if isinstance(value, str) else f"{value:.2f}"
        rows.append([label] + [text] * len(sizes))
    return make_table(
        ["backend"] + [format_size(s) for s in sizes], rows, title=title, caption=caption
    )


def limits(results: list[dict], sizes: list[int]) -> RenderableType:
    """Each row against the hardware on as many threads as it copies with: its ratio to
    the C page loop and to memcpy on T threads, and the CPUs its copy step kept busy."""
    backends = list(dict.fromkeys(r["backend"] for r in results if r.get("threads")))
    cells = {(r["backend"], r["folio_size"]): r for r in results}
    rows: list[list[str]] = []
    for b in backends:
        row = [f"{b} (T={cells[next((b, s) for s in sizes if (b, s) in cells)]['threads']})"]
        for s in sizes:
            r = cells.get((b, s))
            if r is None:
                row.append("-")
                continue
            loop, mem = r.get("ratio_to_page_loop_t"), r.get("ratio_to_memcpy_t")
            row.append(
                f"{'-' if loop is None else f'{loop:.2f}'} | {'-' if mem is None else f'{mem:.2f}'}"
                f" | {r.get('copy_cpu_utilization', 0.0):.2f}"
            )
        rows.append(row)
    return make_table(
        ["against the hardware"] + [format_size(s) for s in sizes],
        rows,
        caption="Per row on T threads or channels: ratio to the C page loop on T threads | "
        "to memcpy on T threads (both in turn, in the rounds of its folio size) | CPUs busy in its "
        "copy step.",
    )


def _ci(r: dict) -> str:
    """The confidence interval of a row's median: ``low-high (level%)``."""
    if "gbps_ci_low" not in r:
        return "-"
    return f"{r['gbps_ci_low']:.2f}-{r['gbps_ci_high']:.2f} ({100 * r['gbps_ci_level']:.0f}%)"


def details(results: list[dict]) -> RenderableType:
    """Runs, copy fraction and engine overhead per folio, one row per result; with
    ``--verify``, what the engine's checks caught: stray writes and wrong copies."""
    checked = any("stray_writes" in r for r in results)
    rows = [
        [
            r["backend"],
            format_size(r["folio_size"]),
            str(r.get("runs", len(r.get("gbps", [])))),
            _ci(r),
            f"{r['copy_fraction']:.2f}",
            f"{r.get('noncopy_us_per_folio', r['overhead_us_per_folio']):.3f}",
            f"{r.get('noncopy_us_per_page', r['overhead_us_per_folio']):.3f}",
            "yes" if r["verified"] else "NO",
        ]
        + ([str(r.get("stray_writes", "-")), str(r.get("wrong_copies", "-"))] if checked else [])
        for r in results
    ]
    head = ["backend", "folio", "runs", "median CI GB/s", "copy fraction"]
    head += ["non-copy us/folio", "non-copy us/4K page"]
    head += ["verified"] + (["stray writes", "wrong copies"] if checked else [])
    return make_table(head, rows)


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
