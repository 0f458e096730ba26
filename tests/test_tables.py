"""Tables for people: every table drawn at 80, 100 and 200 columns fits the width and
loses nothing (cells wrap, never cut), on a terminal or not, COLUMNS and --width
honoured."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from click.testing import CliRunner
from rich.console import Console

from offload import console
from offload.bench import report
from offload.cli import main

RULE = set("─━│|…")


def _render(renderable, width: int) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False, emoji=False).print(renderable)
    return buf.getvalue()


def _chars(text: str) -> Counter:
    return Counter(c for c in text if not c.isspace() and c not in RULE)


def _results() -> list[dict]:
    rows = []
    for b in (
        "cpu-serial",
        "cpu-batched:threads=2",
        "dma-threads:channels=16,coalesce=false",
        "emu:channels=8,gbps=3,setup_us=20,per_folio_us=0.5",
    ):
        for s in (4096, 16384, 65536, 262144, 1 << 20, 2 << 20):
            rows.append(
                {
                    "backend": b,
                    "folio_size": s,
                    "gbps_median": 12.345,
                    "gbps_mad": 0.5,
                    "ratio_to_serial": 1.5 if b != "cpu-serial" else 1.0,
                    "noisy": True,
                    "gbps_outliers": [1],
                    "emulated": b.startswith("emu"),
                    "threads": 2,
                    "ratio_to_page_loop_t": 0.81,
                    "ratio_to_memcpy_t": 0.66,
                    "copy_cpu_utilization": 1.93,
                    "runs": 5,
                    "gbps_ci_low": 11.9,
                    "gbps_ci_high": 12.8,
                    "gbps_ci_level": 0.9375,
                    "copy_fraction": 0.8,
                    "overhead_us_per_folio": 0.058,
                    "verified": True,
                }
            )
    return rows


SIZES = [4096, 16384, 65536, 262144, 1 << 20, 2 << 20]


@pytest.mark.parametrize(
    "make",
    [
        lambda r: report.table(
            r,
            SIZES,
            "move_pages of 256M",
            lines=[("memcpy, 2 threads", "21.89 / 22.24")],
            caption="GB/s, median ±MAD " * 12,
        ),
        lambda r: report.limits(r, SIZES),
        lambda r: report.details(r),
        lambda r: console.table(
            ["backend", "available", "why not / options"],
            [
                [
                    "cupy",
                    "no",
                    "no NVIDIA GPU or driver found on this machine (no /dev/nvidia*); "
                    "on a machine with one: pip install 'folio-offload[cuda12x]'",
                ]
            ],
        ),
    ],
)
@pytest.mark.parametrize("width", [80, 100, 200])
def test_every_table_fits_and_keeps_every_character(make, width):
    t = make(_results())
    wide = _render(t, 1000)
    text = _render(t, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    assert _chars(text) == _chars(wide)  # wrapped, nothing cut


def test_piped_output_honours_columns_and_width(monkeypatch):
    monkeypatch.setattr(console, "WIDTH", None)
    monkeypatch.setenv("COLUMNS", "80")
    r = CliRunner().invoke(main, ["backends"])
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and max(len(x) for x in lines) <= 80
    assert any(x.startswith("cpu-batched") for x in lines)  # names are never cut
    assert "cupy" in r.stdout and "…" not in r.stdout
    monkeypatch.delenv("COLUMNS")
    r = CliRunner().invoke(main, ["backends"])
    assert max(len(x) for x in r.stdout.splitlines()) <= console.PLAIN_WIDTH
    r = CliRunner().invoke(main, ["--width", "120", "backends"])
    assert max(len(x) for x in r.stdout.splitlines()) <= 120
    console.WIDTH = None
