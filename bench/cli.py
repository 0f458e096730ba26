"""``offload bench``: the benchmark suites."""

from __future__ import annotations

import platform
import sys

import click

from offload.errors import OffloadError
from offload.sizes import format_size, parse_size

DEFAULT_SIZES = "4K,16K,64K,256K,1M,2M"
#: In --backends, this name stands for the scheduler's adaptive policy over cpu-batched
#: and the 4-channel DMA engine.
ADAPTIVE = "adaptive"


def dma_engine() -> str:
    """The DMA backend of the default table: ``cupy`` on a usable GPU, else ``dma-threads``."""
    from offload import registry

    return "cupy" if registry.info("cupy").available else "dma-threads"


def default_backends() -> str:
    """The rows of the series' table for this machine."""
    dma = dma_engine()
    return ";".join(
        ["cpu-serial", "cpu-batched"] + [f"{dma}:channels={c}" for c in (1, 2, 4)] + [ADAPTIVE]
    )


def split_backends(text: str) -> list[str]:
    """Split a ``--backends`` value: ``;`` separates specs when any is present, else ``,``.

    ``"cpu-serial;cpu-batched:threads=2"`` and ``"cpu-serial,cpu-batched"`` both work; a
    spec with several options (``name:a=1,b=2``) needs the ``;`` form.
    """
    sep = ";" if ";" in text else ","
    specs = [s.strip() for s in text.split(sep) if s.strip()]
    if sep == "," and any(":" in s for s in specs):
        # "a,b:x=1" is fine; "b:x=1,y=2" would be cut at the comma, so re-join options
        joined: list[str] = []
        for s in specs:
            if joined and "=" in s and ":" not in s:
                joined[-1] += "," + s
            else:
                joined.append(s)
        specs = joined
    if not specs:
        raise click.BadParameter("no backend given", param_hint="--backends")
    return specs


def parse_sizes(text: str) -> list[int]:
    from offload.constants import MAX_FOLIO_ORDER, PAGE_SIZE

    out = []
    for part in text.split(","):
        try:
            size = parse_size(part.strip(), "--sizes")
        except OffloadError as exc:
            raise click.BadParameter(str(exc), param_hint="--sizes") from None
        if size < PAGE_SIZE or size & (size - 1) or size > PAGE_SIZE << MAX_FOLIO_ORDER:
            raise click.BadParameter(
                f"{part.strip()}: folio sizes are powers of two from 4K to 2M", param_hint="--sizes"
            )
        out.append(size)
    return out


def _validate_specs(specs: list[str]) -> None:
    from offload import registry

    for spec in specs:
        if spec == ADAPTIVE:
            continue
        try:
            name, raw = registry.parse_spec(spec)
            registry.validate_options(name, raw, registry.options(name))
            info = registry.info(name)
        except (OffloadError, KeyError) as exc:
            raise click.BadParameter(str(exc), param_hint="--backends") from None
        if not info.available:
            raise click.BadParameter(
                f"{name} is unavailable here: {info.reason}", param_hint="--backends"
            )


def _size_options(f):
    """The options every suite shares."""
    opts = [
        click.option(
            "--sizes",
            default=DEFAULT_SIZES,
            show_default=True,
            help="Folio sizes, powers of two from 4K to 2M.",
        ),
        click.option(
            "--total",
            default="256M",
            show_default=True,
            help="Bytes moved per run (a multiple of every folio size).",
        ),
        click.option(
            "--repeat",
            default=3,
            show_default=True,
            type=click.IntRange(1, 1000),
            help="Timed runs per cell (after the warm-up).",
        ),
        click.option(
            "--warmup",
            default=1,
            show_default=True,
            type=click.IntRange(0, 100),
            help="Untimed runs per cell before the timed ones.",
        ),
        click.option(
            "--batch-pages",
            default=None,
            type=click.IntRange(1, 1 << 24),
            help="NR_MAX_BATCHED_MIGRATION in base pages [default: 65536; the kernel's is 512].",
        ),
        click.option(
            "--layout",
            default="aged",
            show_default=True,
            type=click.Choice(["aged", "fresh"]),
            help="The nodes' free memory: aged (scattered free lists, as on a "
            "machine that has run a while) or fresh (in address order, as "
            "after boot).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON document on stdout."),
        click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _total(total: str, sizes: list[int]) -> int:
    try:
        total_b = parse_size(total, "--total")
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--total") from None
    if total_b <= 0 or any(total_b < s or total_b % s for s in sizes):
        raise click.BadParameter(
            f"{total} must be a positive multiple of every folio size", param_hint="--total"
        )
    return total_b


def _check_plot(path: str) -> None:
    """Before any work: matplotlib is there, and *path* names a file that can be written."""
    import os

    if "\x00" in path or not path.strip():
        raise click.BadParameter(f"{path!r} is not a file name", param_hint="--plot")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint="--plot")
    if not os.access(folder, os.W_OK):
        raise click.BadParameter(f"folder {folder!r} is not writable", param_hint="--plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.UsageError(
            "--plot needs matplotlib: pip install 'folio-offload[plot]'"
        ) from None


def _check_memory(cases, total_b: int) -> None:
    """Refuse up front a --total whose machines cannot fit in this host's free memory."""
    from offload import hostinfo

    from . import movepages

    have = hostinfo.memory_available()
    machines = len({c.machine_key() for c in cases}) if cases else 1
    if not movepages.interleaves(cases, have):
        machines = 1  # one machine at a time
    need = movepages.peak_estimate(total_b, machines)
    if have and need > have:
        raise click.BadParameter(
            f"{format_size(total_b)} needs about {need / 2**30:.1f} GiB of memory here "
            f"({machines} two-node machine(s) of --total each, the data and its checks), "
            f"but {have / 2**30:.1f} GiB is available; use a smaller --total or fewer "
            f"--backends",
            param_hint="--total",
        )


def _run(
    cases,
    total_b: int,
    size_list: list[int],
    repeat: int,
    as_json: bool,
    as_csv: bool,
    title: str,
    to: str = "dram",
    plot: str | None = None,
    reference: bool = False,
) -> None:
    """Run the cells with a progress bar on stderr; print the table, JSON or CSV."""
    _check_memory(cases, total_b)
    from offload.hostinfo import host_info

    from . import movepages, report
    from .roofline import memcpy_gbps, page_loop_gbps
    from .stats import summarize

    data = movepages.pattern(total_b, 0)
    roof = summarize(memcpy_gbps(total_b, max(3, repeat)))["gbps_median"]
    extra: dict = {}
    loop = page_loop_gbps(min(total_b, 256 << 20), max(3, repeat))
    if loop:
        extra["page_loop_gbps"] = summarize(loop)["gbps_median"]
    if to == "device":
        from .roofline import h2d_gbps

        extra["roofline_h2d_gbps"] = summarize(h2d_gbps(total_b, max(3, repeat)))["gbps_median"]
    from offload.hostinfo import memory_available, peak_rss

    interleave = movepages.interleaves(cases, memory_available())
    with click.progressbar(length=len(cases), label=cases[0].suite, file=sys.stderr) as bar:
        try:
            results = movepages.run_cases(
                cases, data, on_done=lambda c: bar.update(1), interleave=interleave
            )
        except movepages.VerificationError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
    report.add_ratios(results, roof, extra.get("roofline_h2d_gbps"))
    extra["batch_pages"] = cases[0].batch_pages
    extra["layout"] = cases[0].layout
    extra["interleaved"] = interleave
    extra["peak_rss_bytes"] = peak_rss()
    extra["peak_rss_per_data_byte"] = round(peak_rss() / total_b, 3)
    if reference:
        from . import reference as ref

        extra["reference"] = {
            "source": ref.SOURCE,
            "gbps": {
                k: {str(s): v for s, v in vals.items()} for k, vals in ref.rows(size_list).items()
            },
        }
    doc = report.document(host_info(), roof, results, **extra)
    if plot:
        from .plot import plot_table

        plot_table(results, size_list, roof, plot, title)
        click.echo(f"plot written to {plot}", err=True)
    if as_json:
        click.echo(report.to_json(doc))
    elif as_csv:
        click.echo(report.to_csv(results), nl=False)
    else:
        click.echo(title)
        click.echo(
            report.table(
                results,
                roof,
                size_list,
                extra.get("roofline_h2d_gbps"),
                page_loop=extra.get("page_loop_gbps"),
            )
        )
        if reference:
            from . import reference as ref

            click.echo("")
            click.echo(ref.table(size_list))
        click.echo("")
        click.echo(report.details(results))


@click.group("bench", invoke_without_command=True)
@click.option(
    "--backends",
    default=None,
    help="Backend specs, comma-separated; use ';' between specs that carry "
    "options (e.g. \"cpu-serial;cpu-batched:threads=2\"). 'adaptive' is the "
    "scheduler's adaptive policy over cpu-batched and the 4-channel DMA engine. "
    "[default: cpu-serial, cpu-batched, the DMA engine (cupy on a usable GPU, "
    "else dma-threads) at 1, 2 and 4 channels, adaptive]",
)
@_size_options
@click.option(
    "--to",
    "to",
    type=click.Choice(["dram", "device"]),
    default="dram",
    show_default=True,
    help="Kind of the destination node; 'device' (GPU memory, needs CuPy) times "
    "dram -> device moves only and adds a cudaMemcpy roofline.",
)
@click.pass_context
@click.option(
    "--verify",
    "verify",
    is_flag=True,
    help="Run every machine with verify=True (each batch compared with its source "
    "after the copy), to measure what that protection costs.",
)
@click.option(
    "--plot",
    "plot",
    type=str,
    default=None,
    help="Also draw the table to this PNG (grouped bars and speedup lines; needs "
    "the 'plot' extra).",
)
def bench(
    ctx: click.Context,
    backends: str | None,
    sizes: str,
    total: str,
    repeat: int,
    warmup: int,
    batch_pages: int | None,
    layout: str,
    as_json: bool,
    as_csv: bool,
    to: str,
    verify: bool,
    plot: str | None,
) -> None:
    """Benchmark migration: GB/s of move_pages by backend and folio size.

    With no subcommand, runs the move_pages suite: a region of --total bytes is moved
    between two nodes, --repeat times per backend and folio size; every run's bytes
    are verified. Reports the median GB/s ± stdev, the ratio to cpu-serial (the
    vanilla kernel) and to this machine's memcpy roofline measured in the same run, the
    copy step's share of the time and the engine's overhead per folio.
    """
    if ctx.invoked_subcommand is not None:
        return
    from . import movepages

    if plot:
        _check_plot(plot)
    specs = split_backends(backends or default_backends())
    _validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = _total(total, size_list)
    if to == "device":
        from offload import registry

        info = registry.info("cupy")
        if not info.available:
            raise click.BadParameter(
                f"device nodes need the cupy backend: {info.reason}", param_hint="--to"
            )
    bp = batch_pages or movepages.DEFAULT_BATCH_PAGES
    cases = []
    for b in specs:
        for s in size_list:
            if b == ADAPTIVE:
                # the policy learns: it measures each of its 3 ways twice before settling
                cases.append(
                    movepages.Case(
                        b,
                        s,
                        total_b,
                        repeat,
                        max(warmup, 6),
                        bp,
                        to=to,
                        cpu="cpu-batched",
                        offload=f"{dma_engine()}:channels=4",
                        policy="adaptive",
                        verify=verify,
                        layout=layout,
                    )
                )
            else:
                cases.append(
                    movepages.Case(
                        b, s, total_b, repeat, warmup, bp, to=to, verify=verify, layout=layout
                    )
                )
    _run(
        cases,
        total_b,
        size_list,
        repeat,
        as_json,
        as_csv,
        f"move_pages of {total} between two nodes, {layout} memory, GB/s median±stdev (xN: "
        f"ratio to cpu-serial; ~: spread > 10%), batch {bp} pages"
        + (", verify=True" if verify else ""),
        to,
        plot=plot,
        reference=True,
    )


SPLIT_POLICIES = (
    "cpu-only",
    "offload-only",
    "static:0.25",
    "static:0.5",
    "static:0.75",
    "adaptive",
)


@bench.command("split")
@click.option(
    "--cpu",
    "cpu",
    default="cpu-batched",
    show_default=True,
    help="Backend spec of the CPU copy path.",
)
@click.option(
    "--offload",
    "offload",
    default="dma-threads:channels=2",
    show_default=True,
    help="Backend spec of the offload engine.",
)
@click.option(
    "--policies",
    default=",".join(SPLIT_POLICIES),
    show_default=True,
    help="Scheduler policies to compare, comma-separated.",
)
@_size_options
def split_cmd(
    cpu: str,
    offload: str,
    policies: str,
    sizes: str,
    total: str,
    repeat: int,
    warmup: int,
    batch_pages: int | None,
    layout: str,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Compare scheduler policies: how each splits every batch between CPU and offload.

    One row per policy (its name in the backend field): cpu-only, offload-only, fixed
    CPU fractions and adaptive, so the adaptive split can be compared with the best
    fixed one. Rows also give the CPU share of the bytes and each side's measured GB/s.
    """
    from offload.scheduler import parse_policy

    from . import movepages

    _validate_specs([cpu, offload])
    pols = [p.strip() for p in policies.split(",") if p.strip()]
    for p in pols:
        try:
            parse_policy(p)
        except OffloadError as exc:
            raise click.BadParameter(str(exc), param_hint="--policies") from None
    size_list = parse_sizes(sizes)
    total_b = _total(total, size_list)
    bp = batch_pages or SPLIT_BATCH_PAGES
    # the adaptive policy learns: it measures each of its 3 ways twice before settling
    cases = [
        movepages.Case(
            p,
            s,
            total_b,
            repeat,
            max(warmup, 6) if p == "adaptive" else warmup,
            bp,
            cpu=cpu,
            offload=offload,
            policy=p,
            suite="split",
            layout=layout,
        )
        for p in pols
        for s in size_list
    ]
    _run(
        cases,
        total_b,
        size_list,
        repeat,
        as_json,
        as_csv,
        f"split: CPU path {cpu} + offload {offload}, move_pages of {total}, {layout} memory, "
        f"GB/s median±stdev, batch {bp} pages",
    )


#: The split suite cuts smaller batches, so that the adaptive policy gets several per run.
SPLIT_BATCH_PAGES = 8192


LATENCY_BATCHES = "1,4,16,64,256,512,1024,4096"


@bench.command("latency")
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
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout.")
def latency_cmd(
    backends: str, batches: str, size: str, total: str, repeat: int, as_json: bool, as_csv: bool
) -> None:
    """The cost of batching: first-folio latency and total time by batch size.

    For each backend and each batch limit, moves --total bytes of --size folios and
    reports when the first folio became usable at its destination (the end of the first
    batch's move phase) and how long the whole call took.
    """
    from offload.hostinfo import host_info

    from . import movepages, report

    specs = split_backends(backends)
    _validate_specs(specs)
    size_b = parse_sizes(size)[0]
    total_b = _total(total, [size_b])
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
    data = movepages.pattern(total_b, 0)
    with click.progressbar(length=len(cases), label="latency", file=sys.stderr) as bar:
        rows = movepages.run_cases(cases, data, on_done=lambda c: bar.update(1))
    from . import kernel

    # one page, in the same run: the model (no migrator) and the host kernel's syscall
    moving, staying = movepages.one_page_us(True), movepages.one_page_us(False)
    host = kernel.one_page_us()
    one = {
        "model_moving_us": moving,
        "model_in_place_us": staying,
        "host_kernel_in_place_us": host,
    }
    if as_json:
        click.echo(report.to_json(report.document(host_info(), None, rows, one_page=one)))
        return
    if as_csv:
        click.echo(report.to_csv(rows), nl=False)
        return
    vs = (
        f" = {moving / host:.1f}x / {staying / host:.1f}x the host kernel's "
        f"{host:.0f} us (one page to node 0, where it is)"
        if host
        else " (host kernel: n/a)"
    )
    click.echo(
        f"one-page move_pages: {moving:.0f} us moving it, {staying:.0f} us where it is already{vs}"
    )
    click.echo(
        f"first-folio latency / total time of move_pages({total} of {size} folios), by "
        "NR_MAX_BATCHED_MIGRATION (pages)"
    )
    head = ["backend"] + [str(b) for b in blist]
    table: list[list[str]] = [head]
    for b in specs:
        cells = [b]
        for bp in blist:
            x = next(x for x in rows if x["backend"] == b and x["batch_pages"] == bp)
            cells.append(f"{x['first_folio_us'] / 1e3:.2f}/{x['total_ms']:.1f} ms")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        click.echo(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        )


@bench.command("cpu")
@click.option(
    "--backends", default=None, help="Backend specs (default: the rows of the main table)."
)
@_size_options
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
) -> None:
    """CPU cost: CPU seconds spent per GB migrated, by backend and folio size.

    Process CPU time (every thread, copy workers included) against wall time during
    move_pages: how much CPU a backend frees (the offload claim, measured). A DMA engine
    on the GPU copies without the CPU; dma-threads only moves the copy to other threads.
    """
    from offload.hostinfo import host_info

    from . import movepages, report

    specs = split_backends(backends or default_backends())
    specs = [s for s in specs if s != ADAPTIVE]
    _validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = _total(total, size_list)
    bp = batch_pages or movepages.DEFAULT_BATCH_PAGES
    cases = [
        movepages.Case(b, s, total_b, repeat, warmup, bp, suite="cpu", layout=layout)
        for b in specs
        for s in size_list
    ]
    data = movepages.pattern(total_b, 0)
    with click.progressbar(length=len(cases), label="cpu", file=sys.stderr) as bar:
        rows = movepages.run_cases(cases, data, on_done=lambda c: bar.update(1))
    if as_json:
        click.echo(report.to_json(report.document(host_info(), None, rows, batch_pages=bp)))
    elif as_csv:
        click.echo(report.to_csv(rows), nl=False)
    else:
        click.echo(
            f"CPU seconds per GB moved (CPU utilisation during the move), move_pages of "
            f"{total}, batch {bp} pages"
        )
        click.echo(report.table(rows, None, size_list, metric="cpu"))


@bench.command("kernel")
@click.option(
    "--sizes",
    default="4K,2M",
    show_default=True,
    help="Folio sizes: 4K (no THP) and 2M (THP by madvise).",
)
@click.option("--total", default="256M", show_default=True, help="Bytes moved per run.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout.")
def kernel_cmd(
    sizes: str, total: str, repeat: int, warmup: int, as_json: bool, as_csv: bool
) -> None:
    """The real kernel's move_pages(2) on this host's NUMA nodes, in the same format.

    Needs two NUMA nodes with memory; with fewer it says so and exits 0. Sizes other
    than 4K and 2M would need mTHP settings in sysfs and are skipped.
    """
    from offload.hostinfo import host_info, numa_nodes

    from . import kernel, report

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
    total_b = _total(total, size_list or [4096])
    rows = []
    with click.progressbar(size_list, label="kernel", file=sys.stderr) as bar:
        for s in bar:
            rows.append(kernel.run(s, total_b, (nodes[0], nodes[1]), repeat, warmup))
    if as_json:
        click.echo(report.to_json(report.document(host_info(), None, rows)))
    elif as_csv:
        click.echo(report.to_csv(rows), nl=False)
    else:
        click.echo(
            f"kernel move_pages(2) of {total} between NUMA nodes {nodes[0]} and "
            f"{nodes[1]}, GB/s median±stdev"
        )
        click.echo(report.table(rows, None, size_list))
        if skipped:
            click.echo("skipped (need mTHP settings): " + ", ".join(str(s) for s in skipped))


@bench.command("scale")
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
    import json

    from offload import hostinfo

    from . import movepages
    from .scale import folio_scaling, mapping_scaling

    _validate_specs([backend])

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
    click.echo(f"scale: {backend}, {layout} memory ...", err=True)
    rows = folio_scaling(ns, backend, layout, repeat)
    maps = mapping_scaling(ms)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "schema": "offload-bench/1",
                    "machine": hostinfo.host_info(),
                    "results": rows + maps,
                },
                indent=1,
            )
        )
        return
    click.echo(f"move_pages of N 4K folios, {backend}, {layout} memory")
    click.echo(
        f"{'N':>9} {'GB/s':>6} {'us/folio':>9} {'x N=' + str(ns[0]):>9} {'first/later':>11} "
        f"{'meta B/page':>11} {'peak RSS':>9}"
    )
    for r in rows:
        click.echo(
            f"{r['folios']:>9} {r['gbps']:6.2f} {r['us_per_folio']:9.3f} "
            f"{r['cost_vs_smallest']:9.2f} {r['first_over_later']:11.2f} "
            f"{r['metadata_bytes_per_page']:11.1f} {r['peak_rss_bytes'] / 2**30:8.2f}G"
        )
    click.echo("")
    click.echo("one 4K mmap / write fault / munmap with N mappings, us")
    for r in maps:
        click.echo(
            f"{r['mappings']:>9} {r['mmap_us']:8.1f} {r['write_fault_us']:8.1f} "
            f"{r['munmap_us']:8.1f}"
        )


@bench.command("stress")
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 86400),
    help="How long to run.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),
    help="Random seed (0 .. 2**32-1).",
)
@click.option("--policy", default="adaptive", show_default=True, help="Scheduler policy.")
@click.option("--verify", is_flag=True, help="Run the machine with verify=True.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def stress_cmd(seconds: float, seed: int, policy: str, verify: bool, as_json: bool) -> None:
    """Random migrations with accessor threads and fault injection, then an integrity check.

    Writers, a reader, a pinner and two migrating threads (move_pages, MOVE_ALL on a
    shared mapping, migrate_pages) run for --seconds over three nodes, while DMA
    descriptors fail, hang past their timeout and complete out of order, and allocations
    on random nodes fail. At the end every byte is compared with what was written last,
    and page accounting is checked. Exits 1 on any loss or unexpected error.
    """
    import json

    from offload.scheduler import parse_policy

    from .stress import run_stress

    try:
        parse_policy(policy)
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    with click.progressbar(length=int(seconds * 10), label="stress", file=sys.stderr) as bar:
        done = [0]

        def progress(t: float) -> None:
            step = int(t * 10) - done[0]
            if step > 0:
                bar.update(step)
                done[0] += step

        rep = run_stress(seconds, seed, policy, verify, progress)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        click.echo(f"stress: {seconds:g} s, seed {seed}, policy {policy}")
        click.echo(
            "operations:  " + ", ".join(f"{k} {v}" for k, v in sorted(rep["operations"].items()))
        )
        click.echo(f"pages moved: {rep['pages_moved']} (not moved: {rep['pages_not_moved']})")
        click.echo(
            "faults:      " + ", ".join(f"{k} {v}" for k, v in rep["faults_injected"].items())
        )
        click.echo(f"integrity:   {'ok' if rep['integrity_ok'] else 'FAILED'}")
        for e in rep["errors"]:
            click.echo(f"error: {e}")
    if not rep["ok"]:
        sys.exit(1)
