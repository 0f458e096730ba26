"""``offload bench``: the benchmark suites."""

from __future__ import annotations

import sys

import click

from offload.errors import OffloadError
from offload.sizes import parse_size

DEFAULT_BACKENDS = "cpu-serial,cpu-batched"
DEFAULT_SIZES = "4K,16K,64K,256K,1M,2M"


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
            raise click.BadParameter(f"{part.strip()}: folio sizes are powers of two from 4K "
                                     "to 2M", param_hint="--sizes")
        out.append(size)
    return out


def _validate_specs(specs: list[str]) -> None:
    from offload import registry

    for spec in specs:
        try:
            name, raw = registry.parse_spec(spec)
            registry.validate_options(name, raw, registry.options(name))
            info = registry.info(name)
        except (OffloadError, KeyError) as exc:
            raise click.BadParameter(str(exc), param_hint="--backends") from None
        if not info.available:
            raise click.BadParameter(f"{name} is unavailable here: {info.reason}",
                                     param_hint="--backends")


def _size_options(f):
    """The options every suite shares."""
    opts = [
        click.option("--sizes", default=DEFAULT_SIZES, show_default=True,
                     help="Folio sizes, powers of two from 4K to 2M."),
        click.option("--total", default="256M", show_default=True,
                     help="Bytes moved per run (a multiple of every folio size)."),
        click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 1000),
                     help="Timed runs per cell (after the warm-up)."),
        click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100),
                     help="Untimed runs per cell before the timed ones."),
        click.option("--batch-pages", default=None, type=click.IntRange(1, 1 << 24),
                     help="NR_MAX_BATCHED_MIGRATION in base pages [default: 65536; the "
                          "kernel's is 512]."),
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
        raise click.BadParameter(f"{total} must be a positive multiple of every folio size",
                                 param_hint="--total")
    return total_b


def _run(cases, total_b: int, size_list: list[int], repeat: int, as_json: bool, as_csv: bool,
         title: str, to: str = "dram") -> None:
    """Run the cells with a progress bar on stderr; print the table, JSON or CSV."""
    from . import movepages, report
    from .hostinfo import host_info
    from .roofline import memcpy_gbps
    from .stats import summarize

    data = movepages.pattern(total_b, 0)
    roof = summarize(memcpy_gbps(total_b, max(3, repeat)))["gbps_median"]
    extra: dict = {}
    if to == "device":
        from .roofline import h2d_gbps

        extra["roofline_h2d_gbps"] = summarize(h2d_gbps(total_b, max(3, repeat)))["gbps_median"]
    with click.progressbar(length=len(cases), label=cases[0].suite, file=sys.stderr) as bar:
        try:
            results = movepages.run_cases(cases, data, on_done=lambda c: bar.update(1))
        except movepages.VerificationError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
    report.add_ratios(results, roof, extra.get("roofline_h2d_gbps"))
    extra["batch_pages"] = cases[0].batch_pages
    doc = report.document(host_info(), roof, results, **extra)
    if as_json:
        click.echo(report.to_json(doc))
    elif as_csv:
        click.echo(report.to_csv(results), nl=False)
    else:
        click.echo(title)
        click.echo(report.table(results, roof, size_list, extra.get("roofline_h2d_gbps")))
        click.echo(report.details(results))


@click.group("bench", invoke_without_command=True)
@click.option("--backends", default=DEFAULT_BACKENDS, show_default=True,
              help="Backend specs, comma-separated; use ';' between specs that carry "
                   "options (e.g. \"cpu-serial;cpu-batched:threads=2\").")
@_size_options
@click.option("--to", "to", type=click.Choice(["dram", "device"]), default="dram",
              show_default=True,
              help="Kind of the destination node; 'device' (GPU memory, needs CuPy) times "
                   "dram -> device moves only and adds a cudaMemcpy roofline.")
@click.pass_context
def bench(ctx: click.Context, backends: str, sizes: str, total: str, repeat: int, warmup: int,
          batch_pages: int | None, as_json: bool, as_csv: bool, to: str) -> None:
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

    specs = split_backends(backends)
    _validate_specs(specs)
    size_list = parse_sizes(sizes)
    total_b = _total(total, size_list)
    if to == "device":
        from offload import registry

        info = registry.info("cupy")
        if not info.available:
            raise click.BadParameter(f"device nodes need the cupy backend: {info.reason}",
                                     param_hint="--to")
    bp = batch_pages or movepages.DEFAULT_BATCH_PAGES
    cases = [movepages.Case(b, s, total_b, repeat, warmup, bp, to=to)
             for b in specs for s in size_list]
    _run(cases, total_b, size_list, repeat, as_json, as_csv,
         f"move_pages of {total} between two nodes, GB/s median±stdev (xN: ratio to "
         f"cpu-serial; ~: spread > 10%), batch {bp} pages", to)


SPLIT_POLICIES = ("cpu-only", "offload-only", "static:0.25", "static:0.5", "static:0.75",
                  "adaptive")


@bench.command("split")
@click.option("--cpu", "cpu", default="cpu-batched", show_default=True,
              help="Backend spec of the CPU copy path.")
@click.option("--offload", "offload", default="dma-threads:channels=2", show_default=True,
              help="Backend spec of the offload engine.")
@click.option("--policies", default=",".join(SPLIT_POLICIES), show_default=True,
              help="Scheduler policies to compare, comma-separated.")
@_size_options
def split_cmd(cpu: str, offload: str, policies: str, sizes: str, total: str, repeat: int,
              warmup: int, batch_pages: int | None, as_json: bool, as_csv: bool) -> None:
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
    cases = [movepages.Case(p, s, total_b, repeat, warmup, bp, cpu=cpu, offload=offload,
                            policy=p, suite="split") for p in pols for s in size_list]
    _run(cases, total_b, size_list, repeat, as_json, as_csv,
         f"split: CPU path {cpu} + offload {offload}, move_pages of {total}, GB/s "
         f"median±stdev, batch {bp} pages")


#: The split suite cuts smaller batches, so that the adaptive policy gets several per run.
SPLIT_BATCH_PAGES = 8192
