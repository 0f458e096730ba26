"""Options and running shared by the bench suites: backend lists, folio sizes,
--total, the cells run with progress."""

from __future__ import annotations

import click

from offload.errors import OffloadError
from offload.sizes import format_size, parse_size

from .output import output_options

DEFAULT_SIZES = "4K,16K,64K,256K,1M,2M"
#: In --backends, this name stands for the scheduler's adaptive policy (each side's cost
#: model) over cpu-batched and the 4-channel DMA engine.
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


def validate_specs(specs: list[str], hint: str = "--backends") -> None:
    """Check backend specs (several providers joined by ``+`` each) before any run."""
    from offload import registry
    from offload.providers import SEPARATOR, parse_providers

    for spec in specs:
        if spec == ADAPTIVE:
            continue
        try:
            parts = (
                [str(p.backend) for p in parse_providers(spec)]
                if SEPARATOR in spec or "@" in spec
                else [spec]
            )
            for part in parts:
                name, raw = registry.parse_spec(part)
                registry.validate_options(name, raw, registry.options(name))
                info = registry.info(name)
                if not info.available:
                    raise click.BadParameter(
                        f"{name} is unavailable here: {info.reason}", param_hint=hint
                    )
        except (OffloadError, KeyError) as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from None


#: The split suite cuts smaller batches, so that the learning policies get several per run.
SPLIT_BATCH_PAGES = 8192


def size_options(f=None, *, batch_default: int | None = None):
    """The options every suite shares; *batch_default*: the suite's own batch limit when
    it is not the bench's (its help says the default that runs)."""
    if f is None:
        return lambda g: size_options(g, batch_default=batch_default)
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
            default=2,
            show_default=True,
            type=click.IntRange(0, 100),
            help="Untimed runs per cell before the timed ones (with one, the first timed "
            "run came out up to 30% faster than the rest here: outliers flagged ! in most "
            "cells).",
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


def parse_total(total: str, sizes: list[int]) -> int:
    try:
        total_b = parse_size(total, "--total")
    except OffloadError as exc:
        raise click.BadParameter(str(exc), param_hint="--total") from None
    if total_b <= 0 or any(total_b < s or total_b % s for s in sizes):
        raise click.BadParameter(
            f"{total} must be a positive multiple of every folio size", param_hint="--total"
        )
    return total_b


def check_memory(cases, total_b: int) -> None:
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
