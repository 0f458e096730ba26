"""``offload bench split``: scheduler policies over one CPU path and one offload
engine."""

from __future__ import annotations

import click
import numpy as np

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

#: The second engine of the two-engine rows: an emulated DMA engine of 2 channels at
#: 2 GB/s each, with a setup and a per-descriptor cost (a what-if: its rows are marked
#: emulated).
SECOND_DEFAULT = "emu:channels=2,gbps=2,setup_us=20,per_folio_us=0.5"
#: The policies that also run with two engines.
TWO_ENGINE_POLICIES = ("offload-only", "adaptive")

#: The rows of one side alone: the other rows are judged against the faster of them.
SINGLE = ("cpu-only", "offload-only")

SPLIT_POLICIES = (
    "cpu-only",
    "offload-only",
    "static:0.25",
    "static:0.5",
    "static:0.75",
    "autotune",
    "adaptive",
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
    "--second",
    "second",
    default=SECOND_DEFAULT,
    show_default=True,
    help="A second offload engine: the policies offload-only and adaptive also run with "
    "both engines (rows 'POLICY x2'; several engines joined by '+'). '' for none.",
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
    second: str,
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
    CPU fractions, autotune (measured throughputs, as Intel DTO's autotune) and adaptive
    (each side's cost model), so that the learnt splits can be compared with the best
    fixed one. Rows also give the CPU share of the bytes and each side's measured GB/s.
    With --second, offload-only and adaptive run again with a second offload engine
    beside the first (rows 'offload-only x2', 'adaptive x2'): the batch is then split
    over the CPU and both engines by their fitted costs.
    """
    from offload.scheduler import parse_policy

    from . import movepages

    out = Outputs(as_json, as_csv, output)
    out.check()
    validate_specs([cpu], "--cpu")
    validate_specs([offload], "--offload")
    if second.strip():
        validate_specs([second], "--second")
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

    def case(label: str, policy: str, size: int, engines: str, warm: int) -> movepages.Case:
        return movepages.Case(
            label,
            size,
            total_b,
            repeat,
            warm,
            bp,
            cpu=cpu,
            offload=engines,
            policy=policy,
            suite="split",
            layout=layout,
        )

    # autotune learns on real batches: it measures each of its 3 ways twice before settling
    cases = [
        case(p, p, s, offload, max(warmup, 6) if parse_policy(p).kind == "autotune" else warmup)
        for p in pols
        for s in size_list
    ]
    if second.strip():
        both = f"{offload}+{second.strip()}"
        cases += [
            case(f"{p} x2", p, s, both, warmup)
            for p in pols
            if parse_policy(p).kind in TWO_ENGINE_POLICIES
            for s in size_list
        ]
    run_table(
        cases,
        total_b,
        size_list,
        out,
        f"split: CPU path {cpu} + offload {offload}"
        + (f" (x2: + {second.strip()}, emulated)" if second.strip() else "")
        + f", move_pages of {total}, {layout} memory, batch {bp} pages",
        details=None,
        annotate=best_single,
    )


def best_single(
    results: list[dict], sizes: list[int], in_turn: bool = True
) -> list[tuple[str, list[str]]]:
    """Each row other than one side alone, against the best single side of its folio
    size (the faster of ``cpu-only`` and ``offload-only`` by median): the ratio of the
    medians, and, where the cells took turns (*in_turn*), the median of the ratios of
    the runs of one round (those met the same host: a drift of the host's speed between
    rounds, which moves the medians of rows a few percent apart, cancels out).

    Adds ``best_single``, ``ratio_to_best_single`` and ``ratio_to_best_single_paired``
    (None where the cells ran one after another) to those rows; returns one table line
    per row name, one text per folio size.
    """
    by = {(r["backend"], r["folio_size"]): r for r in results}
    cells: dict[str, dict[int, str]] = {}
    for size in sizes:
        singles = [by[(b, size)] for b in SINGLE if (b, size) in by]
        if not singles:
            continue
        best = max(singles, key=lambda r: r["gbps_median"])
        for r in results:
            if r["folio_size"] != size or r["backend"] in SINGLE or not best["gbps_median"]:
                continue
            runs = min(len(r["gbps"]), len(best["gbps"]))  # the last rounds: every cell's
            pairs = [a / b for a, b in zip(r["gbps"][-runs:], best["gbps"][-runs:]) if b > 0]
            paired = float(np.median(pairs)) if pairs and in_turn else None
            r["best_single"] = best["backend"]
            r["ratio_to_best_single"] = r["gbps_median"] / best["gbps_median"]
            r["ratio_to_best_single_paired"] = paired
            shown = r["ratio_to_best_single"] if paired is None else paired
            cells.setdefault(r["backend"], {})[size] = f"{shown:.3f}x of {best['backend']}"
    return [
        (
            f"{name} / best single" + (", by round" if in_turn else ""),
            [row.get(s, "-") for s in sizes],
        )
        for name, row in cells.items()
    ]
