"""``offload bench compare``: two JSON documents, cell by cell."""

from __future__ import annotations

import click

from offload import console
from offload.errors import OffloadError
from offload.params import FiniteFloatRange
from offload.sizes import format_size


@click.command("compare")
@click.argument("a", metavar="A.json")
@click.argument("b", metavar="B.json")
@click.option(
    "--fdr",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0.0001, 0.5),
    help="False discovery rate over every test of the comparison (Benjamini-Hochberg).",
)
@click.option(
    "--fail-slower",
    "fail_slower",
    default=None,
    type=FiniteFloatRange(0.0, 100.0),
    help="Exit 1 when a significant slowdown of more than this many percent is found (in "
    "GB/s or in a ratio): a regression gate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(a: str, b: str, fdr: float, fail_slower: float | None, as_json: bool) -> None:
    """Compare two ``offload bench --json`` documents, cell by cell.

    For every cell in both (same suite, backend, folio size, batch and direction), and
    for its GB/s, its ratio to cpu-serial and its ratio to memcpy on its threads (run by
    run, where the rows took turns): the medians, B/A, Welch's t-test over the runs (as
    pyperf does), and whether the change is significant with the false discovery rate
    held at --fdr over all the tests (Benjamini-Hochberg: with 36 cells, 5% per cell
    would call about two of them significant by chance alone). Cells with fewer than
    two runs on a side are never significant. Differences between the two machines or
    settings are listed first. With --fail-slower PCT, exit 1 on a significant slowdown
    of more than PCT percent.
    """
    import json

    from .compare import compare, load, machine_notes, slowdowns

    try:
        da, db = load(a), load(b)
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="A.json/B.json") from None
    rows = compare(da, db, fdr)
    notes = machine_notes(da, db)
    slow = slowdowns(rows, fail_slower) if fail_slower is not None else []
    if as_json:
        doc = {"a": a, "b": b, "fdr": fdr, "notes": notes, "cells": rows, "slowdowns": slow}
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        for n in notes:
            click.echo(f"note: {n}", err=True)
        if not rows:
            click.echo("no cell is in both documents")
        else:

            def ratio(r: dict, metric: str) -> str:
                m = r["metrics"].get(metric)
                if m is None or m["change"] is None:
                    return "-"
                mark = {"faster": " +", "slower": " -"}.get(m["verdict"], "")
                return f"{m['change']:.3f}{mark}"

            console.print_table(
                [
                    "suite",
                    "backend",
                    "folio",
                    "A GB/s",
                    "B GB/s",
                    "B/A",
                    "q",
                    "runs",
                    "verdict",
                    "xserial B/A",
                    "xmemcpy B/A",
                ],
                [
                    [
                        r["suite"],
                        r["backend"],
                        format_size(r["folio_size"]),
                        f"{r['a_gbps']:.2f}",
                        f"{r['b_gbps']:.2f}",
                        f"{r['change']:.3f}" if r["change"] else "-",
                        f"{r['q']:.2g}",
                        f"{r['runs'][0]}/{r['runs'][1]}",
                        r["verdict"],
                        ratio(r, "ratio_to_serial"),
                        ratio(r, "ratio_to_memcpy_t"),
                    ]
                    for r in rows
                ],
                title=f"A = {a}, B = {b}",
                right=[3, 4, 5, 6, 7, 9, 10],
                caption=f"significant: Welch's t-test over the runs, false discovery rate "
                f"{fdr:g} over all {sum(len(r['metrics']) for r in rows)} tests "
                "(Benjamini-Hochberg); ratio columns: B/A of the ratio, + or - when "
                "significant",
            )
    if slow:
        for line in slow:
            click.echo(f"slower: {line}", err=True)
        raise SystemExit(1)
