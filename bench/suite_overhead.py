"""``offload bench overhead``: the engine's own cost, the copy step removed."""

from __future__ import annotations

import click

from offload.sizes import format_size

from . import report
from .common import (
    parse_sizes,
    parse_total,
    size_options,
)
from .output import Outputs, Result, emit


@click.command("overhead")
@size_options
def overhead_cmd(
    sizes: str,
    total: str,
    repeat: int,
    warmup: int,
    batch_pages: int | None,
    layout: str,
    as_json: bool,
    as_csv: bool,
    output: str | None,
) -> None:
    """The engine's own cost per folio: move_pages with the copy step removed.

    The machine's copy backend marks every folio copied and copies nothing, so what is
    timed is the engine alone (walk, isolate, unmap, hand-off, move, bookkeeping), free
    of the copy's cache effects; on the CPU path (the vanilla kernel's) and on the
    offload path (a migrator copying every batch). Nothing is copied, so bytes are not
    checked. Run it with --sizes 4K for the figure that caps small folios.
    """
    from offload.hostinfo import host_info

    from . import movepages, overhead

    out = Outputs(as_json, as_csv, output)
    out.check()
    size_list = parse_sizes(sizes)
    total_b = parse_total(total, size_list)
    bp = batch_pages or movepages.DEFAULT_BATCH_PAGES
    rows = []
    for s in size_list:
        case = movepages.Case("-", s, total_b, repeat, warmup, bp, layout=layout)
        rows += [overhead.measure(path, case) for path in overhead.PATHS]
    doc = report.document(
        host_info(), None, rows, batch_pages=bp, layout=layout, repeat=repeat, warmup=warmup
    )

    def render() -> list:
        from offload.console import table

        cols = (
            "us_per_folio",
            "unmap_us_per_folio",
            "handoff_us_per_folio",
            "move_us_per_folio",
            "other_us_per_folio",
        )
        return [
            table(
                ["path", "folio", "us/folio", "unmap", "hand-off", "move", "other"],
                [
                    [r["path"], format_size(r["folio_size"])] + [f"{r[c]:.3f}" for c in cols]
                    for r in rows
                ],
                title=f"Engine cost with the copy step removed, move_pages of {total}, "
                f"{layout} memory, batch {bp} pages",
                caption=f"us per folio, median of {repeat} runs: the whole call, then its "
                "unmap phase, the copy step's hand-off (nothing copied), the move phase, and "
                "the rest (page-table walk, isolation, statuses).",
            )
        ]

    emit(out, Result(doc, render, []))
