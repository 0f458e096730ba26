"""``offload bench scale``: cost per folio, metadata and peak memory against the
number of folios; mmap/munmap against the number of mappings."""

from __future__ import annotations

import click

from offload import console
from offload.errors import OffloadError
from offload.sizes import parse_size

from . import report
from .common import (
    validate_specs,
)
from .output import Outputs, Result, emit


@click.command("scale")
@click.option(
    "--backend",
    default="cpu-batched",
    show_default=True,
    help="Backend spec doing the batch copy (cpu-serial: no migrator).",
)
@click.option(
    "--counts",
    default="16K,64K,256K,1M",
    show_default=True,
    help="Numbers of 4 KiB folios moved by one move_pages (K/M suffixes).",
)
@click.option(
    "--mappings",
    default="1K,10K,100K",
    show_default=True,
    help="Numbers of mappings a process holds while one more is mapped.",
)
@click.option(
    "--layout",
    default="aged",
    show_default=True,
    type=click.Choice(["aged", "fresh"]),
    help="The nodes' free memory.",
)
@click.option(
    "--repeat",
    default=3,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Timed runs per count after the first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def scale_cmd(
    backend: str, counts: str, mappings: str, layout: str, repeat: int, as_json: bool
) -> None:
    """Scale: cost per folio, first-move cost, metadata and peak memory against the
    number of folios moved; mmap/munmap cost against the number of mappings."""

    from offload import hostinfo

    from . import movepages
    from .scale import folio_scaling, mapping_scaling

    validate_specs([backend])

    def counts_of(text: str, what: str) -> list[int]:
        try:
            out = sorted({parse_size(x.strip(), what) for x in text.split(",") if x.strip()})
        except OffloadError as exc:
            raise click.BadParameter(str(exc), param_hint=what) from None
        if not out or out[0] < 1:
            raise click.BadParameter("expected positive counts such as 16K,1M", param_hint=what)
        return out

    ns = counts_of(counts, "--counts")
    ms = counts_of(mappings, "--mappings")
    if ms[-1] > 1 << 20:
        raise click.BadParameter("at most 1M mappings", param_hint="--mappings")
    need = movepages.peak_estimate(ns[-1] * 4096, 1)
    have = hostinfo.memory_available()
    if have and need > have:
        raise click.BadParameter(
            f"{ns[-1]} folios need about {need / 2**30:.1f} GiB; "
            f"{have / 2**30:.1f} GiB is available",
            param_hint="--counts",
        )
    from offload.console import progress

    # a count of N folios costs about N (repeat + 1) folio moves; N mappings cost N mmaps
    weight = sum(n * (repeat + 1) for n in ns) + sum(ms)
    with progress("scale", len(ns) + len(ms), weight, unit="counts") as bar:

        def folios_done(r: dict) -> None:
            bar.advance(f"{r['folios']} folios", weight=r["folios"] * (repeat + 1))
            bar.done(f"{r['folios']} folios: {r['us_per_folio']:.3f} us/folio")

        def maps_done(r: dict) -> None:
            bar.advance(f"{r['mappings']} mappings", weight=r["mappings"])
            bar.done(f"{r['mappings']} mappings: mmap {r['mmap_us']:.1f} us")

        rows = folio_scaling(ns, backend, layout, repeat, on_done=folios_done)
        maps = mapping_scaling(ms, on_done=maps_done)
    doc = report.document(
        hostinfo.host_info(), None, rows + maps, layout=layout, repeat=repeat, warmup=0
    )

    def fmt(r: dict, key: str, spec: str) -> str:
        return format(r[key], spec) if key in r else "-"

    def render() -> list:
        return [
            console.table(
                [
                    "N",
                    "GB/s",
                    "us/folio",
                    f"x N={ns[0]}",
                    "C loop us/page",
                    f"C loop x N={ns[0]}",
                    "x / C loop x",
                    "first/later",
                    "meta B/page",
                    "peak RSS",
                ],
                [
                    [
                        r["folios"],
                        f"{r['gbps']:.2f}",
                        f"{r['us_per_folio']:.3f}",
                        f"{r['cost_vs_smallest']:.2f}",
                        fmt(r, "page_loop_us_per_page", ".3f"),
                        fmt(r, "page_loop_vs_smallest", ".2f"),
                        fmt(r, "cost_vs_smallest_over_page_loop", ".2f"),
                        f"{r['first_over_later']:.2f}",
                        f"{r['metadata_bytes_per_page']:.1f}",
                        f"{r['peak_rss_bytes'] / 2**30:.2f}G",
                    ]
                    for r in rows
                ],
                title=f"move_pages of N 4K folios, {backend}, {layout} memory",
                caption=f"medians of {repeat} runs after the first; the C loop copies as many "
                "random pages between two buffers of that size, after the model's machine is "
                "gone: its growth with N is the memory hierarchy's, and the model's growth "
                "over it is the engine's",
            ),
            "",
            console.table(
                ["mappings", "mmap us", "write fault us", "munmap us"],
                [
                    [
                        r["mappings"],
                        f"{r['mmap_us']:.1f}",
                        f"{r['write_fault_us']:.1f}",
                        f"{r['munmap_us']:.1f}",
                    ]
                    for r in maps
                ],
                title="one 4K mmap / write fault / munmap with N mappings",
            ),
        ]

    emit(Outputs(as_json), Result(doc, render))
