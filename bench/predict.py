"""``offload predict``: the move_pages table (GB/s by folio size x engine x width) as a
cost model fitted on a few measured rows predicts it, with the CPU time it costs.

The model, per engine and folio size: a move_pages call of one GB takes
``serial + parallel / width`` seconds (:class:`offload.costmodel.WidthCost`): the part
no width shares (the engine's non-copy work, issuing, waiting) and the copy part spread
over the engine's threads or channels. Two widths of an engine fit it at each size; the
baseline (the vanilla kernel, one CPU) is a row of its own. CPU seconds per GB: the
whole time for the baseline; ``serial + parallel`` for an engine that copies with CPUs
(each of ``width`` threads busy ``parallel / width``); ``serial`` alone for a DMA engine
(the CPU hands the copy over and sleeps until it completes).

Calibration reads only the rows it is given: a CSV of ``engine, width, folio_bytes,
gbps_mean[, gbps_sd]``, or ``published``: the series' RFC V3 table restricted, before
anything reads it, to the baseline and widths 1 and 16 of each engine.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable

import click
import numpy as np

from offload.costmodel import WidthCost
from offload.sizes import format_size

from . import published

SCHEMA = "offload-predict/1"
#: what each engine copies with (see :data:`published.KIND`); an engine not named here
#: is taken to copy with CPUs
KIND = {**published.KIND, "cpu-serial": "cpu", "cpu-batched": "cpu", "dma-threads": "cpu"}
KIND.update({"cupy": "dma", "emu": "dma"})
BASELINES = ("baseline", "cpu-serial")
#: the rows the published calibration keeps
CALIBRATION_WIDTHS = (1, 16)


def read_rows(source: str, calibration: bool) -> list[dict]:
    """Rows from *source*: ``published`` or a CSV path. For calibration, ``published`` is
    cut to the baseline and widths :data:`CALIBRATION_WIDTHS` here, before any model
    sees it.

    Raises
    ------
    click.BadParameter
        A file that cannot be read, or rows without the needed columns or with values
        that are not positive numbers.
    """
    if source == "published":
        rows = published.rows()
        if calibration:
            rows = [r for r in rows if r["engine"] in BASELINES or r["width"] in CALIBRATION_WIDTHS]
        return rows
    try:
        with open(source, newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError as exc:
        raise click.BadParameter(f"{source!r}: {exc.strerror or exc}") from None
    except (ValueError, csv.Error) as exc:  # a NUL in the name, bytes that are not text
        raise click.BadParameter(f"{source!r}: not a readable CSV file ({exc})") from None
    out = []
    for i, r in enumerate(raw, start=2):
        try:
            engine = r["engine"].strip()
            width, size = int(r["width"]), int(r["folio_bytes"])
            gbps = float(r["gbps_mean"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise click.BadParameter(
                f"{source!r} line {i}: need engine, width, folio_bytes, gbps_mean (got {dict(r)})"
            ) from None
        if width < 1 or size < 1 or not np.isfinite(gbps) or gbps <= 0:
            raise click.BadParameter(f"{source!r} line {i}: width, size and GB/s must be > 0")
        out.append({"engine": engine, "width": width, "folio_bytes": size, "gbps_mean": gbps})
    if not out:
        raise click.BadParameter(f"{source!r}: no rows")
    return out


def host_rows(total: int, sizes: list[int], repeat: int) -> list[dict]:
    """Calibration rows measured here: ``cpu-serial`` (the baseline), and ``cpu-batched``
    and ``dma-threads`` at width 1 and at every usable CPU (at least 2), by ``offload
    bench``'s cells (aged memory, verified, the rows taking turns)."""
    from offload.backends.cpu_batched import usable_cpus

    from . import movepages
    from .common import run_with_progress

    wide = max(2, usable_cpus())
    specs = {
        ("cpu-serial", 1): "cpu-serial",
        ("cpu-batched", 1): "cpu-batched:threads=1",
        ("cpu-batched", wide): f"cpu-batched:threads={wide}",
        ("dma-threads", 1): "dma-threads:channels=1",
        ("dma-threads", wide): f"dma-threads:channels={wide}",
    }
    cases = [
        movepages.Case(spec, size, total, repeat, 1) for spec in specs.values() for size in sizes
    ]
    results, interrupted = run_with_progress(cases, movepages.pattern(total, 0))
    if interrupted:
        raise KeyboardInterrupt
    by_spec = {(r["backend"], r["folio_size"]): r["gbps_median"] for r in results}
    return [
        {"engine": e, "width": w, "folio_bytes": size, "gbps_mean": by_spec[spec, size]}
        for (e, w), spec in specs.items()
        for size in sizes
    ]


class Model:
    """The fitted model: per engine and folio size a :class:`WidthCost`, and the
    baseline's seconds per GB per size."""

    def __init__(self, rows: Iterable[dict]) -> None:
        self.baseline: dict[int, float] = {}
        self.baseline_name = BASELINES[0]
        by: dict[tuple[str, int], dict[int, list[float]]] = {}
        self.calibrated: set[tuple[str, int, int]] = set()
        for r in rows:
            e, w, s, g = r["engine"], r["width"], r["folio_bytes"], r["gbps_mean"]
            self.calibrated.add((e, w, s))
            if e in BASELINES:
                self.baseline[s] = 1.0 / g
                self.baseline_name = e
            else:
                by.setdefault((e, s), {}).setdefault(w, []).append(1.0 / g)
        self.costs: dict[tuple[str, int], WidthCost] = {}
        self.skipped: list[str] = []
        for (e, s), widths in sorted(by.items()):
            if len(widths) < 2:
                self.skipped.append(
                    f"{e} at {format_size(s)}: one width only ({next(iter(widths))}); two "
                    "are needed"
                )
                continue
            ws = sorted(widths)
            lo, hi = ws[0], ws[-1]
            self.costs[e, s] = WidthCost.from_two(
                lo, float(np.mean(widths[lo])), hi, float(np.mean(widths[hi]))
            )

    @property
    def engines(self) -> list[str]:
        return sorted({e for e, _ in self.costs})

    @property
    def sizes(self) -> list[int]:
        return sorted({s for _, s in self.costs} | set(self.baseline))

    def predict(self, engine: str, width: int, size: int) -> dict | None:
        """GB/s and CPU seconds per GB of *engine* at *width* and *size*; None where the
        model has nothing for it."""
        if engine in BASELINES:
            t = self.baseline.get(size)
            if t is None:
                return None
            return {"gbps": 1.0 / t, "cpu_s_per_gb": t}
        cost = self.costs.get((engine, size))
        if cost is None:
            return None
        t = cost.seconds_per_gb(width)
        cpu = cost.serial if KIND.get(engine, "cpu") == "dma" else cost.serial + cost.parallel
        return {"gbps": 1.0 / t, "cpu_s_per_gb": cpu}

    def describe(self) -> dict:
        return {
            "baseline_s_per_gb": {str(s): t for s, t in sorted(self.baseline.items())},
            "engines": {
                e: {
                    str(s): {"serial_s_per_gb": c.serial, "parallel_s_per_gb": c.parallel}
                    for (e2, s), c in sorted(self.costs.items())
                    if e2 == e
                }
                for e in self.engines
            },
            "skipped": self.skipped,
        }


def predictions(model: Model, widths: list[int], sizes: list[int]) -> list[dict]:
    """Every (engine, width, size) the model can predict, the baseline first."""
    out = []
    for engine in [model.baseline_name if model.baseline else None, *model.engines]:
        if engine is None:
            continue
        for w in [1] if engine in BASELINES else widths:
            for s in sizes:
                p = model.predict(engine, w, s)
                if p is not None:
                    calibrated = (engine, w, s) in model.calibrated
                    out.append(
                        {
                            "engine": engine,
                            "width": w,
                            "folio_bytes": s,
                            **p,
                            "calibrated": calibrated,
                        }
                    )
    return out


def score(model: Model, rows: list[dict]) -> dict:
    """Relative errors of the model on the *rows* it was not calibrated on."""
    cells = []
    for r in rows:
        key = (r["engine"], r["width"], r["folio_bytes"])
        if key in model.calibrated:
            continue
        p = model.predict(*key)
        if p is None:
            continue
        err = (p["gbps"] - r["gbps_mean"]) / r["gbps_mean"]
        cells.append(
            {
                "engine": key[0],
                "width": key[1],
                "folio_bytes": key[2],
                "predicted_gbps": p["gbps"],
                "measured_gbps": r["gbps_mean"],
                "error": err,
            }
        )
    errs = np.abs([c["error"] for c in cells]) if cells else np.zeros(0)
    return {
        "cells": cells,
        "held_out": len(cells),
        "median_abs_error": float(np.median(errs)) if cells else None,
        "max_abs_error": float(errs.max()) if cells else None,
    }


def _table(preds: list[dict], sizes: list[int], key: str, fmt: str, title: str, caption: str):
    from offload.console import table

    rows: dict[tuple[str, int], dict[int, dict]] = {}
    for p in preds:
        rows.setdefault((p["engine"], p["width"]), {})[p["folio_bytes"]] = p
    body = []
    for (e, w), cells in rows.items():
        label = e if e in BASELINES else f"{e} x{w}"
        body.append(
            [label]
            + [
                (format(cells[s][key], fmt) + ("*" if cells[s]["calibrated"] else ""))
                if s in cells
                else "-"
                for s in sizes
            ]
        )
    return table(
        ["engine x width"] + [format_size(s) for s in sizes], body, title=title, caption=caption
    )


@click.command("predict")
@click.option(
    "--calibrate",
    "source",
    default="published",
    show_default=True,
    help="Rows to fit the model on: a CSV (engine,width,folio_bytes,gbps_mean) of which "
    "every row is used, 'published' (the series' RFC V3 table, cut to the baseline "
    "and widths 1 and 16 before the fit sees it), or 'host' (measured here: cpu-serial, "
    "and cpu-batched and dma-threads at 1 and at every CPU).",
)
@click.option(
    "--sizes",
    default="4K,64K,2M",
    show_default=True,
    help="Folio sizes to measure with --calibrate host.",
)
@click.option(
    "--total",
    default="64M",
    show_default=True,
    help="Bytes each measurement moves, with --calibrate host.",
)
@click.option(
    "--widths",
    default="1,2,4,8,12,16",
    show_default=True,
    help="Widths (threads or channels) to predict.",
)
@click.option(
    "--score",
    "score_source",
    default=None,
    help="Rows to score the prediction against ('published' or a CSV): the error of every "
    "cell that was not in the calibration.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
def predict(
    source: str, sizes: str, total: str, widths: str, score_source: str | None, as_json: bool
) -> None:
    """Predict the move_pages table (GB/s by folio size x engine x width), and its CPU
    seconds per GB, from a cost model fitted on a few rows.

    Per engine and folio size, one GB takes serial + parallel / width seconds (the part
    no thread or channel shares, and the copy spread over them); two widths of an engine
    fit it. Cells marked * were calibration rows. With --score, each cell not used for
    the calibration is compared with a measured one. Example, the series' own check:
    fit on the baseline and the 1- and 16-wide rows, score the 2-, 4-, 8- and 12-wide:

        offload predict --calibrate published --score published
    """
    try:
        ws = sorted({int(x) for x in widths.split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{widths!r}: comma-separated whole numbers", param_hint="--widths"
        ) from None
    if not ws or ws[0] < 1 or ws[-1] > 1024:
        raise click.BadParameter(f"{widths!r}: widths from 1 to 1024", param_hint="--widths")
    if source == "host":
        from .common import parse_sizes, parse_total

        size_list = parse_sizes(sizes)
        cal_rows = host_rows(parse_total(total, size_list), size_list, 3)
    else:
        cal_rows = read_rows(source, calibration=True)
    model = Model(cal_rows)
    if not model.costs and not model.baseline:
        raise click.UsageError(f"{source}: nothing to fit (no baseline, no engine with two widths)")
    columns = model.sizes
    preds = predictions(model, ws, columns)
    doc: dict = {
        "schema": SCHEMA,
        "calibration": {"source": source, "rows": len(model.calibrated), **model.describe()},
        "predictions": preds,
    }
    if score_source is not None:
        doc["score"] = score(model, read_rows(score_source, calibration=False))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from offload.console import stdout

    out = stdout()
    cal = f"fitted on {len(model.calibrated)} rows of {source}; * a calibration row"
    out.print(_table(preds, columns, "gbps", ".2f", "move_pages GB/s, predicted", cal))
    out.print()
    out.print(
        _table(
            preds,
            columns,
            "cpu_s_per_gb",
            ".3f",
            "CPU seconds per GB moved, predicted",
            "an engine of CPU threads costs its serial and its parallel part; a DMA engine "
            "only its serial part (the CPU sleeps while it copies)",
        )
    )
    for line in model.skipped:
        click.echo(f"note: not modelled: {line}", err=True)
    if "score" in doc:
        sc = doc["score"]
        if not sc["held_out"]:
            click.echo("score: no held-out cell to compare (every row was a calibration row)")
            return
        out.print()
        from offload.console import table

        worst = sorted(sc["cells"], key=lambda c: -abs(c["error"]))
        out.print(
            table(
                ["engine x width", "folio", "predicted", "measured", "error"],
                [
                    [
                        f"{c['engine']} x{c['width']}",
                        format_size(c["folio_bytes"]),
                        f"{c['predicted_gbps']:.2f}",
                        f"{c['measured_gbps']:.2f}",
                        f"{100 * c['error']:+.0f}%",
                    ]
                    for c in worst
                ],
                title=f"held-out cells of {score_source}, worst first",
                caption=f"{sc['held_out']} cells: median |error| "
                f"{100 * sc['median_abs_error']:.1f}%, max {100 * sc['max_abs_error']:.1f}%",
            )
        )


__all__ = ["Model", "predict", "predictions", "read_rows", "score"]
