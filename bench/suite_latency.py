"""``offload bench latency``: first-folio latency by batch size, and one-page
move_pages beside the host kernel's."""

from __future__ import annotations

import click

from offload import console

from . import report
from .common import (
    parse_sizes,
    parse_total,
    run_with_progress,
    split_backends,
    validate_specs,
)
from .output import Outputs, Result, emit, output_options

LATENCY_BATCHES = "1,4,16,64,256,512,1024,4096"


@click.command("latency")
@click.option(
    "--backends",
    default="cpu-serial;cpu-batched;dma-threads:channels=4",
    show_default=True,
    help="Backend specs (';' between specs with options).",
)
@click.option(
    "--batches",
    default=LATENCY_BATCHES,
    show_default=True,
    help="NR_MAX_BATCHED_MIGRATION values to try, in base pages.",
)
@click.option("--size", default="4K", show_default=True, help="Folio size.")
@click.option("--total", default="16M", show_default=True, help="Bytes moved per run.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000))
@output_options
def latency_cmd(
    backends: str,
    batches: str,
    size: str,
    total: str,
    repeat: int,
    as_json: bool,
    as_csv: bool,
    output: str | None,
) -> None:
    """The cost of batching: first-folio latency and total time by batch size.

    For each backend and each batch limit, moves --total bytes of --size folios and
    reports when the first folio became usable at its destination (the end of the first
    batch's move phase) and how long the whole call took. Also times a one-page
    move_pages of the model beside the host kernel's.
    """
    from offload.hostinfo import host_info

    from . import kernel, movepages

    out = Outputs(as_json, as_csv, output)
    out.check()
    specs = split_backends(backends)
    validate_specs(specs)
    size_b = parse_sizes(size)[0]
    total_b = parse_total(total, [size_b])
    try:
        blist = sorted({int(b) for b in batches.split(",") if b.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{batches!r}: expected page counts such as 1,64,512", param_hint="--batches"
        ) from None
    if not blist or blist[0] < 1:
        raise click.BadParameter("batch sizes are positive page counts", param_hint="--batches")
    cases = [
        movepages.Case(b, size_b, total_b, repeat, 1, bp, suite="latency")
        for b in specs
        for bp in blist
    ]
    rows, interrupted = run_with_progress(cases, movepages.pattern(total_b, 0))
    # one page, in the same run: the model (no migrator) and the host kernel's syscall
    moving, staying = movepages.one_page_us(True), movepages.one_page_us(False)
    host = kernel.one_page_us()
    one = {"model_moving_us": moving, "model_in_place_us": staying, "host_kernel_in_place_us": host}
    doc = report.document(host_info(), None, rows, one_page=one, repeat=repeat, warmup=1)
    vs = (
        f" = {moving / host:.1f}x / {staying / host:.1f}x the host kernel's "
        f"{host:.0f} us (one page to node 0, where it is)"
        if host
        else " (host kernel: n/a)"
    )

    def render() -> list:
        cells = {(x["backend"], x["batch_pages"]): x for x in rows}
        table = [
            [b]
            + [
                f"{cells[b, bp]['first_folio_us'] / 1e3:.2f} / {cells[b, bp]['total_ms']:.1f}"
                + ("~" if cells[b, bp].get("noisy") else "")
                if (b, bp) in cells
                else "-"
                for bp in blist
            ]
            for b in specs
        ]
        return [
            f"one-page move_pages: {moving:.0f} us moving it, {staying:.0f} us where it is "
            f"already{vs}",
            console.table(
                ["backend"] + [str(b) for b in blist],
                table,
                title=f"first-folio latency / total time (ms) of move_pages({total} of {size} "
                "folios), by NR_MAX_BATCHED_MIGRATION (pages)",
                caption=f"medians of {repeat} runs; ~: the runs' GB/s vary by more than 10%",
            ),
        ]

    emit(out, Result(doc, render, [f"interrupted: {len(rows)} cells shown"] if interrupted else []))
    if interrupted:
        raise KeyboardInterrupt
