"""``offload bench split``: scheduler policies over one CPU path and one offload
engine."""

from __future__ import annotations

import click

from offload.errors import OffloadError

from .common import (
    SPLIT_BATCH_PAGES,
    parse_sizes,
    parse_total,
    size_options,
    validate_specs,
)
from .output import Outputs
from .suite_table import run_table

SPLIT_POLICIES = (
    "cpu-only",
    "offload-only",
    "static:0.25",
    "static:0.5",
    "static:0.75",
    "adaptive",
    "model",
)


@click.command("split")
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
@size_options(batch_default=SPLIT_BATCH_PAGES)
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
    validate_specs([cpu, offload])
    pols = [p.strip() for p in policies.split(",") if p.strip()]
    if not pols:
        raise click.BadParameter("no policy given", param_hint="--policies")
    for p in pols:
        try:
            parse_policy(p)
        except OffloadError as exc:
            raise click.BadParameter(str(exc), param_hint="--policies") from None
    size_list = parse_sizes(sizes)
    total_b = parse_total(total, size_list)
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
    run_table(
        cases,
        total_b,
        size_list,
        out,
        f"split: CPU path {cpu} + offload {offload}, move_pages of {total}, {layout} memory, "
        f"batch {bp} pages",
        details=None,
    )
