"""``offload bench``: the benchmark suites."""

from __future__ import annotations

import platform
import sys

import click

from offload import console
from offload.errors import OffloadError
from offload.params import FiniteFloatRange
from offload.sizes import format_size, parse_size

from . import report
from .output import Outputs, Result, emit, output_options

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


#: The split suite cuts smaller batches, so that the adaptive policy gets several per run.
SPLIT_BATCH_PAGES = 8192


def _size_options(f=None, *, batch_default: int | None = None):
    """The options every suite shares; *batch_default*: the suite's own batch limit when
    it is not the bench's (its help says the default that runs)."""
    if f is None:
        return lambda g: _size_options(g, batch_default=batch_default)
    from .movepages import DEFAULT_BATCH_PAGES

    batch = batch_default or DEFAULT_BATCH_PAGES
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
            default=5,
            show_default=True,
            type=click.IntRange(1, 1000),
            help="Timed runs per cell (after the warm-up); at least 5 give a median with a "
            "confidence interval worth the name.",
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
            help=f"NR_MAX_BATCHED_MIGRATION in base pages [default: {batch}; the kernel's is 512].",
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
    ]
    for opt in reversed(opts):
        f = opt(f)
    return output_options(f)


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


def run_weight(case) -> float:
    """The expected cost of one run of *case*, for the ETA: its bytes at 2 GB/s plus
    4 us per folio (measured here: a run of 4 KiB folios costs about 3x one of 2 MiB
    folios of the same bytes)."""
    return case.total / 2e9 + case.total // case.folio_size * 4e-6


def run_with_progress(
    cases, data, interleave: bool = True, on_round=None, on_rows=None
) -> tuple[list[dict], bool]:
    """Run the cells with progress on stderr (one unit per run, warm-up included);
    ``on_round`` as :func:`movepages.run_cases` takes it; ``on_rows(rows)`` follows each
    finished cell with every row finished so far (the ``-o`` file is written so).

    Returns (the rows of the finished cells, whether Ctrl-C stopped the run early).
    """
    from offload.console import progress

    from . import movepages

    finished: dict[int, dict] = {}  # case index -> row
    order = {id(c): i for i, c in enumerate(cases)}
    total = sum(c.warmup + c.repeat for c in cases)
    weight = sum((c.warmup + c.repeat) * run_weight(c) for c in cases)
    label = cases[0].suite if cases else "bench"
    with progress(label, total, weight) as bar:

        def on_run(c) -> None:
            bar.advance(f"{c.backend} {format_size(c.folio_size)}", weight=run_weight(c))

        def on_done(c, row) -> None:
            finished[order[id(c)]] = row
            if on_rows is not None:
                on_rows([finished[i] for i in sorted(finished)])
            bar.done(
                f"{c.backend} {format_size(c.folio_size)}: {row['gbps_median']:.2f} GB/s "
                f"(median of {row.get('runs', c.repeat)} runs, MAD {row.get('gbps_mad', 0):.2f})"
            )

        try:
            movepages.run_cases(
                cases,
                data,
                on_done=on_done,
                on_run=on_run,
                interleave=interleave,
                on_round=on_round,
            )
        except KeyboardInterrupt:
            return [finished[i] for i in sorted(finished)], True
    return [finished[i] for i in sorted(finished)], False


def _run(
    cases,
    total_b: int,
    size_list: list[int],
    out: Outputs,
    title: str,
    to: str = "dram",
    reference: bool = False,
) -> None:
    """Measure the rooflines, run the cells with progress, then write the results.

    Ctrl-C writes the cells finished so far, then the command exits 130.
    """
    _check_memory(cases, total_b)
    from offload.console import stderr
    from offload.hostinfo import host_info, memory_available, peak_rss

    from . import movepages
    from . import references as refs_mod
    from .roofline import memcpy_gbps, memcpy_mt_gbps
    from .stats import summarize

    repeat = max(c.repeat for c in cases)
    host = host_info()
    threads = host["cpus"]
    counts = sorted({t for c in cases if (t := refs_mod.row_threads(c, threads))} | {1})
    stderr().print(
        f"measuring this machine's references (memcpy and a C page loop on "
        f"{', '.join(map(str, counts))} thread(s); memcpy of --total on 1 and {threads}) ...",
        markup=False,
    )
    data = movepages.pattern(total_b, 0)
    roof = summarize(memcpy_gbps(total_b, max(3, repeat)))["gbps_median"]
    extra: dict = {
        "roofline_method": "one np.copyto of --total bytes between two buffers, 1 thread"
    }
    mt = summarize(memcpy_mt_gbps(total_b, threads, max(3, repeat)))["gbps_median"]
    # a ceiling on more threads is never below the one on fewer (a noisy VM inverts them)
    extra["roofline_mt_gbps"] = max(mt, roof)
    extra["roofline_mt_measured_gbps"] = mt
    extra["roofline_mt_threads"] = threads
    refs = refs_mod.References(total_b, counts)
    refs.back_to_back(max(3, repeat))
    if to == "device":
        from .roofline import h2d_gbps

        extra["roofline_h2d_gbps"] = summarize(h2d_gbps(total_b, max(3, repeat)))["gbps_median"]
    # the references hold their memory already: MemAvailable lacks it, the need counts it
    interleave = movepages.interleaves(cases, memory_available() + refs.nbytes, refs.nbytes)

    # the references the rows are judged by are timed in the same conditions as they are:
    # one pass each per timed round of the rows taking turns (their memory idle while the
    # rows ran, as each row's is while the others run; on a VM first touches after an
    # idle second cost up to 2x), or back to back where one machine at a time runs
    def on_round(r: int, rounds: int) -> None:
        if r >= rounds - repeat:  # the rounds every row times
            refs.turn()

    if not interleave:
        refs.release()  # one machine at a time needs the room their buffers hold
    from .output import partial_writer

    head = report.document(host, roof, [], **extra)
    results, interrupted = run_with_progress(
        cases, data, interleave, on_round, on_rows=partial_writer(out, head)
    )
    refs.release()
    summary = refs.summary(total_b)
    extra["references"] = summary
    if mt < roof:
        summary["warnings"].append(
            f"memcpy of --total on {threads} threads measured {mt:.2f} GB/s, below 1 thread "
            f"({roof:.2f}): the larger is reported as the multi-threaded roofline"
        )
    loop1 = summary.get("page_loop", {}).get("1")
    if loop1 is not None:  # the one-thread loop, as before (schema fields kept)
        extra["page_loop_runs"] = loop1["runs"]
        extra["page_loop_gbps"] = loop1["measured_gbps"]
        extra["page_loop_hot_gbps"] = loop1["hot_gbps"] or loop1["measured_gbps"]
        extra["page_loop_method"] = (
            "one pass per round of the rows taking turns"
            if summary["method"] == "in turn"
            else "back to back, before the cells"
        )
    report.add_ratios(
        results, roof, extra.get("roofline_h2d_gbps"), roofline_mt=extra["roofline_mt_gbps"]
    )
    refs_mod.add_limits(results, cases, summary, threads)
    extra.update(
        batch_pages=cases[0].batch_pages,
        layout=cases[0].layout,
        repeat=repeat,
        warmup=max(c.warmup for c in cases),
        interleaved=interleave,
        peak_rss_bytes=peak_rss(),
        peak_rss_per_data_byte=round(peak_rss() / total_b, 3),
    )
    if interrupted:
        extra["interrupted"] = f"{len(results)} of {len(cases)} cells finished"
    if reference:
        from . import reference as ref

        extra["reference"] = {
            "source": ref.SOURCE,
            "gbps": {
                k: {str(s): v for s, v in vals.items()} for k, vals in ref.rows(size_list).items()
            },
        }
    doc = report.document(host, roof, results, **extra)
    lines: list[tuple[str, float | str]] = [
        ("memcpy roofline, 1 thread", roof),
        (f"memcpy roofline, {threads} threads", extra["roofline_mt_gbps"]),
    ]
    lines += refs_mod.lines(summary)
    in_turn = summary["method"] == "in turn"
    loop_note = (
        f"; the references (memcpy, and a C page loop over as many scattered 4 KiB pages, "
        f"{format_size(refs.bytes)}) on each row's thread count: "
        + (
            "timed in turn with the rows (their memory idle meanwhile, as the rows' is) "
            "/ back to back"
            if in_turn
            else "back to back, as each row runs its cells"
        )
    )
    if "roofline_h2d_gbps" in extra:
        lines.append(("cudaMemcpy H2D", extra["roofline_h2d_gbps"]))

    def render() -> list:
        from . import reference as ref

        items: list = [
            report.table(
                results,
                size_list,
                title,
                lines=lines,
                caption=f"GB/s, median ±MAD of {repeat} runs; xN: ratio to cpu-serial; ~: robust "
                "spread > 10%; !: a run more than 3 robust SDs off the median (kept). "
                "Rooflines: one contiguous copy of the same bytes (1 thread; "
                f"{threads} threads, the ceiling of multi-threaded rows){loop_note}.",
            )
        ]
        if any(r.get("threads") for r in results):
            items += ["", report.limits(results, size_list)]
        if reference:
            items += ["", ref.table(size_list)]
        items += ["", report.details(results)]
        return items

    notes = list(summary["warnings"])
    if interrupted:
        notes.append(f"interrupted: {len(results)} of {len(cases)} cells finished and shown")
    if not any(c.backend == "cpu-serial" for c in cases) and cases[0].suite == "move_pages":
        notes.append(
            "no cpu-serial row, so no xN ratios: they compare with cpu-serial (the vanilla "
            "kernel's copy); add it to --backends"
        )

    def plot(path: str) -> None:
        from .plot import plot_table

        plot_table(doc, size_list, path, title, published=reference)

    strays = {r["backend"]: r["stray_writes"] for r in results if r.get("stray_writes")}
    wrong = sum(r.get("wrong_copies", 0) for r in results)
    if wrong:
        notes.append(
            f"verify: {wrong} wrong copies caught and redone by the CPU (column 'wrong copies')"
        )
    emit(out, Result(doc, render, notes, plot))
    if interrupted:
        raise KeyboardInterrupt
    if strays:
        from .movepages import VerificationError

        raise VerificationError(
            "a backend wrote outside its batch (caught by --verify and undone): "
            + ", ".join(f"{b}: {n} pages" for b, n in strays.items())
        )


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
    help="Also draw the table to this figure (.png, .pdf or .svg; no suffix: .png): bars "
    "per backend with the references, and the speedup over cpu-serial; needs the 'plot' "
    "extra. An existing file is kept unless --force.",
)
@click.option("--force", is_flag=True, help="Let --plot overwrite an existing file.")
@click.option(
    "--published",
    is_flag=True,
    help="Also show the series' published kernel table (and its rows in the --plot figure).",
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
    output: str | None,
    to: str,
    verify: bool,
    plot: str | None,
    force: bool,
    published: bool,
) -> None:
    """Benchmark migration: GB/s of move_pages by backend and folio size.

    With no subcommand, runs the move_pages suite: a region of --total bytes is moved
    between two nodes, --repeat times per backend and folio size; every run's bytes
    are verified. Reports the median GB/s ± MAD, the ratio to cpu-serial (the
    vanilla kernel) and to this machine's memcpy rooflines measured in the same run, the
    copy step's share of the time and the engine's overhead per folio.

    \b
    Progress goes to stderr (a bar on a terminal, else one line per finished cell).
    Exit status: 0 done; 1 error; 2 bad usage; 3 a run left wrong bytes; 130
    interrupted, after the finished cells are printed.
    """
    if ctx.invoked_subcommand is not None:
        return
    from . import movepages

    out = Outputs(as_json, as_csv, output, plot, force)
    out.check()
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
        out,
        f"move_pages of {total} between two nodes, {layout} memory, batch {bp} pages"
        + (", verify=True" if verify else ""),
        to,
        reference=published,
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
@_size_options(batch_default=SPLIT_BATCH_PAGES)
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
    output: str | None,
) -> None:
    """Compare scheduler policies: how each splits every batch between CPU and offload.

    One row per policy (its name in the backend field): cpu-only, offload-only, fixed
    CPU fractions and adaptive, so the adaptive split can be compared with the best
    fixed one. Rows also give the CPU share of the bytes and each side's measured GB/s.
    """
    from offload.scheduler import parse_policy

    from . import movepages

    out = Outputs(as_json, as_csv, output)
    out.check()
    _validate_specs([cpu, offload])
    pols = [p.strip() for p in policies.split(",") if p.strip()]
    if not pols:
        raise click.BadParameter("no policy given", param_hint="--policies")
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
        out,
        f"split: CPU path {cpu} + offload {offload}, move_pages of {total}, {layout} memory, "
        f"batch {bp} pages",
    )


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
                caption=f"medians of {repeat} runs",
            ),
        ]

    emit(out, Result(doc, render, [f"interrupted: {len(rows)} cells shown"] if interrupted else []))
    if interrupted:
        raise KeyboardInterrupt


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
    _validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = _total(total, size_list)
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
                caption=f"medians of {repeat} runs",
            )
        ]

    emit(out, Result(doc, render, [f"interrupted: {len(rows)} cells shown"] if interrupted else []))
    if interrupted:
        raise KeyboardInterrupt


@bench.command("overhead")
@_size_options
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
    total_b = _total(total, size_list)
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
    total_b = _total(total, size_list or [4096])
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


@bench.command("stress")
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    type=FiniteFloatRange(0.1, 86400),
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
    and page accounting is checked. Exit status 3 on any loss, 1 on an unexpected error.
    """
    import json

    from offload.scheduler import parse_policy

    from .stress import run_stress

    try:
        parse_policy(policy)
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    from offload.console import progress

    with progress("stress", int(seconds * 10), unit="tenths of a second") as bar:
        done = [0]

        def tick(t: float) -> None:
            step = int(t * 10) - done[0]
            if step > 0:
                bar.advance("running", step)
                done[0] += step

        rep = run_stress(seconds, seed, policy, verify, tick)
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
    if not rep["integrity_ok"]:
        sys.exit(3)  # bytes or frames lost: a verification failure
    if not rep["ok"]:
        sys.exit(1)


@bench.command("compare")
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
