"""``offload bench kernel``: the host kernel's move_pages(2) between NUMA nodes."""

from __future__ import annotations

import platform

import click

from offload.sizes import format_size

from . import report
from .common import (
    parse_sizes,
    parse_total,
)
from .output import Outputs, Result, emit, output_options


@click.command("kernel")
@click.option(
    "--sizes",
    default="4K,2M",
    show_default=True,
    help="Folio sizes: 4K (no THP) and 2M (THP by madvise).",
)
@click.option("--total", default="256M", show_default=True, help="Bytes moved per run.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100))
@output_options
def kernel_cmd(
    sizes: str,
    total: str,
    repeat: int,
    warmup: int,
    as_json: bool,
    as_csv: bool,
    output: str | None,
) -> None:
    """The real kernel's move_pages(2) on this host's NUMA nodes, in the same format.

    Needs two NUMA nodes with memory; with fewer it says so and exits 0. Sizes other
    than 4K and 2M would need mTHP settings in sysfs and are skipped.
    """
    from offload.console import progress
    from offload.hostinfo import host_info, numa_nodes

    from . import kernel

    out = Outputs(as_json, as_csv, output)
    out.check()
    nodes = numa_nodes()
    if len(nodes) < 2:
        click.echo(
            f"kernel: this host has {len(nodes) or 1} NUMA node(s) with memory; "
            "move_pages(2) between nodes needs at least two. Nothing to measure."
        )
        return
    if kernel.syscall_number() is None:
        click.echo(
            f"kernel: move_pages' syscall number on {platform.machine()} is not known "
            "here. Nothing to measure."
        )
        return
    size_list = parse_sizes(sizes)
    skipped = [s for s in size_list if s not in (4096, 2 << 20)]
    size_list = [s for s in size_list if s in (4096, 2 << 20)]
    total_b = parse_total(total, size_list or [4096])
    rows = []
    with progress("kernel", len(size_list), unit="sizes") as bar:
        for s in size_list:
            rows.append(kernel.run(s, total_b, (nodes[0], nodes[1]), repeat, warmup))
            bar.advance(format_size(s))
            bar.done(f"kernel {format_size(s)}: {rows[-1]['gbps_median']:.2f} GB/s")
    doc = report.document(host_info(), None, rows, repeat=repeat, warmup=warmup)
    notes = (
        ["skipped (need mTHP settings): " + ", ".join(map(format_size, skipped))] if skipped else []
    )

    def render() -> list:
        return [
            report.table(
                rows,
                size_list,
                f"kernel move_pages(2) of {total} between NUMA nodes {nodes[0]} and {nodes[1]}",
                caption=f"GB/s, median ±MAD of {repeat} runs",
            )
        ]

    emit(out, Result(doc, render, notes))
