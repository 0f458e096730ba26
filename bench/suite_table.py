"""``offload bench``: the move_pages table (the command group; its own suite runs
when no subcommand is named), its references and its output."""

from __future__ import annotations

from collections.abc import Callable

import click

from offload.sizes import format_size

from . import report
from .common import (
    ADAPTIVE,
    check_memory,
    default_backends,
    dma_engine,
    parse_sizes,
    parse_total,
    run_with_progress,
    size_options,
    split_backends,
    validate_specs,
)
from .output import Outputs, Result, emit


def run_table(
    cases,
    total_b: int,
    size_list: list[int],
    out: Outputs,
    title: str,
    to: str = "dram",
    reference: bool = False,
    details: bool | None = False,
    plot_size: str = "page",
    annotate: Callable[[list[dict], list[int], bool], list[tuple[str, list[str]]]] | None = None,
) -> None:
    """Measure the rooflines, run the cells with progress, then write the results: one
        table and a short caption; with *details* each row against the hardware and the
        per-cell details too (None: the command has no such option, and the caption does not
    offer it); with *reference* the series' published table. *annotate* (a suite's own
    comparison of its rows, given them, the folio sizes and whether the cells took
    turns) may add fields to the rows and returns lines for the table, a label and one
    text per folio size.

        Ctrl-C writes the cells finished so far, then the command exits 130.
    """
    check_memory(cases, total_b)
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
    def on_round(r: int, rounds: int, size: int) -> None:
        # every round, so that each row's runs are as far apart in the first timed round
        # as in the others (without it the first timed run came out up to 30% faster);
        # kept for the rounds every row times, and by folio size: each size's rows are
        # judged by the passes of their own rounds (a shared host's speed can change
        # between the sizes)
        refs.turn(record=r >= rounds - repeat, size=size)

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
    summary["warnings"] += refs_mod.add_limits(results, cases, summary, threads)
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
    # before the document: it may add fields to the rows
    lines: list[tuple[str, float | str | list[str]]] = []
    if annotate is not None:
        lines += annotate(results, size_list, interleave)
    doc = report.document(host, roof, results, **extra)
    lines += [
        ("memcpy roofline, 1 thread", roof),
        (f"memcpy roofline, {threads} threads", extra["roofline_mt_gbps"]),
    ]
    lines += refs_mod.lines(summary, size_list)
    in_turn = summary["method"] == "in turn"
    how = "in turn / back to back" if in_turn else "back to back"
    if "roofline_h2d_gbps" in extra:
        lines.append(("cudaMemcpy H2D", extra["roofline_h2d_gbps"]))

    # the caption explains only what the table shows
    has_ratio = any(
        r.get("ratio_to_serial") is not None and r["backend"] != "cpu-serial" for r in results
    )
    has_split = any("cpu_fraction" in r for r in results)

    def render() -> list:
        from . import reference as ref

        items: list = [
            report.table(
                results,
                size_list,
                title,
                lines=lines,
                caption=f"GB/s, median ±MAD of {repeat} runs; "
                + ("xN: to cpu-serial; " if has_ratio else "")
                + ("cpuF: the CPU's share of the bytes; " if has_split else "")
                + f"~ noisy, ! an outlying run. References on 1..T threads "
                f"({format_size(refs.bytes)}): {how}."
                + (
                    " --details: each row against them, CIs, non-copy time."
                    if details is False
                    else ""
                ),
            )
        ]
        if details and any(r.get("threads") for r in results):
            items += ["", report.limits(results, size_list)]
        if reference:
            items += ["", ref.table(size_list)]
        if details:
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

        plot_table(doc, size_list, path, title, published=reference, size=plot_size)

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
    "scheduler's adaptive policy (each side's cost model, fitted as it copies) over "
    "cpu-batched and the 4-channel DMA engine. "
    "[default: cpu-serial, cpu-batched, the DMA engine (cupy on a usable GPU, "
    "else dma-threads) at 1, 2 and 4 channels, adaptive]",
)
@size_options
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
    "--plot-size",
    "plot_size",
    type=click.Choice(["page", "column"]),
    default="page",
    show_default=True,
    help="The --plot figure's width: a page (7.2 in) or one column of a two-column paper "
    "(3.4 in, fonts sized to be read there).",
)
@click.option(
    "--details",
    is_flag=True,
    help="Also show each row against the hardware (page loop and memcpy on its threads, "
    "CPUs busy) and the per-cell details (CI of the median, copy share, non-copy time).",
)
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
    plot_size: str,
    details: bool,
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
    validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = parse_total(total, size_list)
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
    run_table(
        cases,
        total_b,
        size_list,
        out,
        f"move_pages of {total} between two nodes, {layout} memory, batch {bp} pages"
        + (", verify=True" if verify else ""),
        to,
        reference=published,
        details=details,
        plot_size=plot_size,
    )
