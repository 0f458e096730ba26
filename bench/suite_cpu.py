"""``offload bench cpu``: CPU seconds per GB moved."""

from __future__ import annotations

import click

from . import report
from .common import (
    ADAPTIVE,
    default_backends,
    parse_sizes,
    parse_total,
    run_with_progress,
    size_options,
    split_backends,
    validate_specs,
)
from .output import Outputs, Result, emit


@click.command("cpu")
@click.option(
    "--backends", default=None, help="Backend specs (default: the rows of the main table)."
)
@size_options
def cpu_cmd(
    backends: str | None,
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
    """CPU cost: CPU seconds spent per GB migrated, by backend and folio size.

    Process CPU time (every thread, copy workers included) against wall time during
    move_pages: how much CPU a backend frees (the offload claim, measured). A DMA engine
    on the GPU copies without the CPU; dma-threads only moves the copy to other threads.
    """
    from offload.hostinfo import host_info

    from . import movepages

    out = Outputs(as_json, as_csv, output)
    out.check()
    specs = split_backends(backends or default_backends())
    specs = [s for s in specs if s != ADAPTIVE]
    validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = parse_total(total, size_list)
    bp = batch_pages or movepages.DEFAULT_BATCH_PAGES
    cases = [
        movepages.Case(b, s, total_b, repeat, warmup, bp, suite="cpu", layout=layout)
        for b in specs
        for s in size_list
    ]
    rows, interrupted = run_with_progress(cases, movepages.pattern(total_b, 0))
    doc = report.document(
        host_info(), None, rows, batch_pages=bp, layout=layout, repeat=repeat, warmup=warmup
    )

    def render() -> list:
        return [
            report.table(
                rows,
                size_list,
                f"CPU seconds per GB moved, of the whole call and of its copy step (CPU "
                f"utilisation during the move), move_pages of {total}, batch {bp} pages",
                metric="cpu",
                caption=f"medians of {repeat} runs; ~: the runs' GB/s vary by more than 10%",
            )
        ]

    emit(out, Result(doc, render, [f"interrupted: {len(rows)} cells shown"] if interrupted else []))
    if interrupted:
        raise KeyboardInterrupt
