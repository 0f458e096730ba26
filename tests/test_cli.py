"""The click CLI: help, backends, info, and a small verified bench run."""

import json

import pytest
from click.testing import CliRunner

from offload.cli import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_help_lists_commands(run):
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("backends", "bench", "info"):
        assert cmd in r.output


def test_backends_and_info(run):
    r = run("backends")
    assert r.exit_code == 0 and "cpu-serial" in r.output and "threads" in r.output
    r = run("info", "--nodes", "64M,dram:32M")
    assert r.exit_code == 0 and "node 1: dram" in r.output and "32M" in r.output
    assert run("info", "--nodes", "64Q").exit_code != 0


def test_bench_json_follows_the_schema(run):
    r = run("bench", "--backends", "cpu-serial;cpu-batched:threads=2", "--sizes", "4K,64K",
            "--total", "4M", "--repeat", "2", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "offload-bench/1"
    assert doc["roofline_gbps"] > 0 and doc["machine"]["cpus"] >= 1
    rows = doc["results"]
    assert [(x["backend"], x["folio_size"]) for x in rows] == [
        ("cpu-serial", 4096), ("cpu-serial", 65536),
        ("cpu-batched:threads=2", 4096), ("cpu-batched:threads=2", 65536)]
    for x in rows:
        assert x["suite"] == "move_pages" and x["verified"] is True
        assert len(x["gbps"]) == 2 and x["gbps_median"] > 0
        assert x["total_bytes"] == 4 << 20 and x["folios"] == (4 << 20) // x["folio_size"]
        assert 0 < x["copy_fraction"] <= 1 and x["overhead_us_per_folio"] > 0
    assert rows[0]["ratio_to_serial"] == pytest.approx(1.0)


def test_bench_table_and_csv(run):
    r = run("bench", "--backends", "cpu-serial", "--sizes", "4K", "--total", "1M", "--repeat", "1")
    assert r.exit_code == 0 and "memcpy roofline" in r.output and "cpu-serial" in r.output
    r = run("bench", "--backends", "cpu-serial", "--sizes", "4K", "--total", "1M", "--repeat", "1",
            "--csv")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("suite,backend,folio_size") and len(lines) == 2


@pytest.mark.parametrize("args, hint", [
    (["--backends", "nope"], "--backends"), (["--backends", "cpu-batched:threads=0"], "--backends"),
    (["--sizes", "3K"], "--sizes"), (["--sizes", "4M"], "--sizes"),
    (["--total", "6K", "--sizes", "4K"], "--total"), (["--total", "lots"], "--total"),
    (["--repeat", "0"], "--repeat"),
])
def test_bench_rejects_bad_options(run, args, hint):
    r = CliRunner().invoke(main, ["bench", *args])
    assert r.exit_code == 2 and hint in r.output
