"""CLI conventions: exit codes, Ctrl-C, output options checked first, progress lines,
the JSON document against docs/bench-schema.json, compare, info and backends as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from offload.cli import main

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "bench-schema.json").read_text())
SMALL = ["--sizes", "4K,64K", "--total", "1M", "--repeat", "2", "--warmup", "0"]


def invoke(*args: str):
    # mix_stderr is gone in click 8.2; stdout and stderr are apart either way
    return CliRunner().invoke(main, list(args))


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_the_schema_is_a_valid_schema_and_catches_a_bad_document():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    r = invoke("bench", "--backends", "cpu-serial", *SMALL, "--json")
    doc = json.loads(r.stdout)
    validate(doc)
    bad = json.loads(r.stdout)
    del bad["results"][0]["gbps_mad"]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(r.stdout)
    bad["results"][0]["verified"] = False
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--backends", "cpu-serial;cpu-batched:threads=1;adaptive", *SMALL],
        ["bench", "split", "--policies", "cpu-only,static:0.5", *SMALL],
        ["bench", "cpu", "--backends", "cpu-serial", *SMALL],
        ["bench", "latency", "--backends", "cpu-serial", "--batches", "16,256",
         "--total", "1M", "--repeat", "2"],
        ["bench", "scale", "--counts", "1K", "--mappings", "16", "--repeat", "1"],
    ],
)  # fmt: skip
def test_every_suite_writes_a_document_that_follows_the_schema(args):
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    validate(doc)
    assert doc["tool"]["name"] == "folio-offload" and doc["command"].startswith("offload")


def test_metadata_and_statistics_in_the_document():
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL, "--json")
    doc = json.loads(r.stdout)
    assert doc["layout"] == "aged" and doc["repeat"] == 2 and doc["warmup"] == 0
    assert doc["roofline_mt_gbps"] > 0 and doc["roofline_mt_threads"] >= 1
    for x in doc["results"]:
        assert x["runs"] == 2 == len(x["gbps"]) and x["warmup"] == 0
        assert x["gbps_min"] <= x["gbps_median"] <= x["gbps_max"]
        assert x["ratio_to_roofline_mt"] == pytest.approx(
            x["gbps_median"] / doc["roofline_mt_gbps"]
        )


def test_json_and_csv_together_is_a_usage_error_before_any_work(monkeypatch):
    import offload.bench.movepages as mp

    monkeypatch.setattr(mp, "pattern", lambda *a: pytest.fail("work started"))
    r = invoke("bench", *SMALL, "--json", "--csv")
    assert r.exit_code == 2 and "--json and --csv" in r.output


@pytest.mark.parametrize(
    "opt, value, says",
    [
        ("-o", "/no/such/folder/out.json", "does not exist"),
        ("-o", "out.txt", ".json or .csv"),
        ("--plot", "/no/such/folder/p.png", "does not exist"),
    ],
)
def test_bad_output_paths_fail_before_any_work(monkeypatch, opt, value, says):
    import offload.bench.movepages as mp

    monkeypatch.setattr(mp, "pattern", lambda *a: pytest.fail("work started"))
    r = invoke("bench", *SMALL, opt, value)
    assert r.exit_code == 2 and says in r.output


def test_output_file_holds_the_document_and_the_table_still_prints(tmp_path):
    out = tmp_path / "r.json"
    r = invoke("bench", "--backends", "cpu-serial", *SMALL, "-o", str(out))
    assert r.exit_code == 0 and "cpu-serial" in r.stdout and "memcpy roofline" in r.stdout
    validate(json.loads(out.read_text()))
    out = tmp_path / "r.csv"
    assert invoke("bench", "--backends", "cpu-serial", *SMALL, "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("suite,backend,folio_size")


def test_the_output_file_is_written_even_when_stdout_is_closed(tmp_path):
    """``offload bench -o r.json | head -1``: the pipe closes before the table is out,
    and what was measured is in the file all the same."""
    import subprocess
    import sys

    out = tmp_path / "r.json"
    cli = "from offload.cli import main; main()"
    cmd = [sys.executable, "-c", cli, "bench", "--backends", "cpu-serial", *SMALL]
    p = subprocess.Popen([*cmd, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.close()  # the reader is gone before anything is printed
    p.wait(timeout=120)
    validate(json.loads(out.read_text()))


def test_progress_outside_a_terminal_is_one_line_per_finished_cell():
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL)
    lines = [x for x in r.stderr.splitlines() if x.startswith("[")]
    assert len(lines) == 4  # 2 backends x 2 sizes
    assert lines[-1].startswith("[8/8 runs") and "GB/s (median of 2 runs" in lines[-1]


def test_a_run_without_cpu_serial_says_why_ratios_are_missing():
    r = invoke("bench", "--backends", "cpu-batched", *SMALL)
    assert r.exit_code == 0 and "no cpu-serial row" in r.stderr
    row = next(x for x in r.stdout.splitlines() if x.startswith("cpu-batched"))
    assert " x" not in row  # no ratio without its baseline
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL)
    assert "no cpu-serial row" not in r.stderr


def test_ctrl_c_prints_the_finished_cells_and_exits_130(monkeypatch):
    import offload.bench.movepages as mp

    calls = {"n": 0}
    real = mp.Cell.run_once

    def run_once(self):
        calls["n"] += 1
        if self.case.folio_size == 65536:  # the 4K cells finish, then Ctrl-C
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(mp.Cell, "run_once", run_once)
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL, "--json")
    assert r.exit_code == 130
    doc = json.loads(r.stdout)
    validate(doc)
    assert [x["folio_size"] for x in doc["results"]] == [4096, 4096]
    assert doc["interrupted"] == "2 of 4 cells finished"
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL)
    assert r.exit_code == 130 and "cpu-batched" in r.stdout and "interrupted" in r.stderr


def test_wrong_bytes_exit_3(monkeypatch):
    import offload.bench.movepages as mp

    monkeypatch.setattr(mp, "_same_bytes", lambda *a, **k: False)
    r = invoke("bench", "--backends", "cpu-serial", *SMALL)
    assert r.exit_code == 3 and "wrong bytes" in r.output


def test_an_error_exits_1_with_its_message_and_no_traceback(monkeypatch):
    import offload.bench.movepages as mp
    from offload.errors import OffloadError

    def boom(*a):
        raise OffloadError("the machine caught fire")

    monkeypatch.setattr(mp, "pattern", boom)
    r = invoke("bench", "--backends", "cpu-serial", *SMALL)
    assert r.exit_code == 1 and "Error: the machine caught fire" in r.output
    assert "Traceback" not in r.output


def _doc(gbps_by_cell: dict) -> dict:
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL, "--json")
    doc = json.loads(r.stdout)
    for x in doc["results"]:
        x["gbps"] = gbps_by_cell[x["backend"], x["folio_size"]]
    return doc


def test_compare_says_which_differences_are_significant(tmp_path):
    same = [5.0, 5.1, 4.9, 5.0]
    a = _doc({(b, s): same for b in ("cpu-serial", "cpu-batched") for s in (4096, 65536)})
    b = _doc(
        {
            ("cpu-serial", 4096): same,  # unchanged
            ("cpu-serial", 65536): [6.0, 6.1, 5.9, 6.0],  # clearly faster
            ("cpu-batched", 4096): [4.0, 4.1, 3.9, 4.0],  # clearly slower
            ("cpu-batched", 65536): [5.5, 4.5, 5.2, 4.9],  # noise
        }
    )
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    r = invoke("bench", "compare", str(pa), str(pb), "--json")
    assert r.exit_code == 0, r.output
    got = {(c["backend"], c["folio_size"]): c["verdict"] for c in json.loads(r.stdout)["cells"]}
    assert got == {
        ("cpu-serial", 4096): "not significant",
        ("cpu-serial", 65536): "faster",
        ("cpu-batched", 4096): "slower",
        ("cpu-batched", 65536): "not significant",
    }
    r = invoke("bench", "compare", str(pa), str(pb))
    assert r.exit_code == 0 and "faster" in r.stdout and "slower" in r.stdout
    pb.write_text("{}")
    assert invoke("bench", "compare", str(pa), str(pb)).exit_code == 2


def test_info_and_backends_as_json():
    r = invoke("info", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["host"]["cpus"] >= 1 and isinstance(doc["numa"], list)
    for n in doc["numa"]:
        assert n["size_bytes"] >= n["free_bytes"] >= 0 and len(n["distances"]) == len(doc["numa"])
    assert [m["size_bytes"] for m in doc["model_machine"]["layout"]] == [256 << 20, 256 << 20]
    r = invoke("backends", "--json")
    by = {b["name"]: b for b in json.loads(r.stdout)}
    assert by["dma-threads"]["options"]["channels"]["default"] == 1
    assert by["cpu-serial"]["available"] is True
    reason = by["cupy"]["reason"]
    if not by["cupy"]["available"]:  # what the machine lacks first, then what to install
        first = reason.split(";")[0].split(":")[0].lower()
        assert any(w in first for w in ("gpu", "driver", "cuda", "device")), reason
        assert reason.find("pip install") > len(first)


def test_backends_table_keeps_columns_with_long_names(monkeypatch):
    from offload import registry
    from offload.migrator import Migrator

    class Long(Migrator):
        name = "a-backend-with-a-very-long-name-indeed"

        def offload_copy(self, batch):
            pass

    registry.register(Long.name, Long)
    try:
        r = invoke("backends")
    finally:
        registry._default._targets.pop(Long.name, None)
        registry._default._loaded.pop(Long.name, None)
    lines = r.stdout.splitlines()
    col = lines[0].index("available")
    row = next(x for x in lines if x.startswith("cpu-serial"))
    assert row[col : col + 3] == "yes"  # the column did not move


def test_one_machine_at_a_time_times_the_page_loop_back_to_back(monkeypatch):
    """Where the cells cannot take turns (a --total too large for all machines at once),
    every row runs its cells back to back, and so does the page loop it is judged by."""
    from offload import native
    from offload.bench import movepages

    if not native.available():
        pytest.skip("no C compiler here: no page loop to time")
    monkeypatch.setattr(movepages, "interleaves", lambda *a, **k: False)
    r = invoke("bench", "--backends", "cpu-serial;cpu-batched", *SMALL, "--json")
    doc = json.loads(r.stdout)
    validate(doc)
    assert doc["interleaved"] is False and doc["page_loop_method"].startswith("back to back")
    assert len(doc["page_loop_runs"]) == 3  # the back-to-back passes, at least 3


def test_one_machine_at_a_time_means_one_machine_alive(monkeypatch):
    """Large runs build one machine per row, in turn: the previous one (nodes of --total
    each) must be gone before the next is built, or the peak doubles."""
    import gc
    import weakref

    from offload.bench import movepages

    made: list = []
    build = movepages.machine_for

    def tracked(*key):
        gc.collect()
        alive = [w for w in made if w() is not None]
        assert not alive, "the previous machine is still alive while the next is built"
        m = build(*key)
        made.append(weakref.ref(m))
        return m

    monkeypatch.setattr(movepages, "machine_for", tracked)
    total = 1 << 20
    cases = [
        movepages.Case(b, 64 << 10, total, repeat=1, warmup=0)
        for b in ("cpu-serial", "cpu-batched", "dma-threads")
    ]
    rows = movepages.run_cases(cases, movepages.pattern(total, 0), interleave=False)
    assert [r["backend"] for r in rows] == ["cpu-serial", "cpu-batched", "dma-threads"]
    assert len(made) == 3 and all(w() is None for w in made)


def test_the_output_file_keeps_every_finished_cell_while_the_run_goes_on(tmp_path, monkeypatch):
    """-o is rewritten as each cell finishes: a run killed after its first cell leaves a
    valid document with that cell (marked partial); the finished run's has no mark."""
    from offload.bench import movepages

    path = tmp_path / "run.json"
    real = movepages.Cell.finish
    calls = []

    def finish(self):
        calls.append(1)
        if len(calls) == 2:  # a kill after the first cell: nothing else runs
            raise RuntimeError("killed")
        return real(self)

    monkeypatch.setattr(movepages.Cell, "finish", finish)
    r = invoke("bench", "--backends", "cpu-serial", *SMALL, "-o", str(path))
    assert r.exit_code != 0
    doc = json.loads(path.read_text())
    assert len(doc["results"]) == 1 and doc["partial"] == "1 cells so far"
    assert doc["results"][0]["folio_size"] == 4096 and doc["results"][0]["verified"]
    monkeypatch.setattr(movepages.Cell, "finish", real)
    r = invoke("bench", "--backends", "cpu-serial", *SMALL, "-o", str(path))
    assert r.exit_code == 0, r.output
    doc = json.loads(path.read_text())
    assert len(doc["results"]) == 2 and "partial" not in doc
    assert not (tmp_path / "run.json.partial").exists()


def _noisy(rng, mean: float, n: int = 5, sd: float = 0.04) -> list[float]:
    return [float(x) for x in mean * (1 + sd * rng.standard_normal(n))]


def test_compare_of_the_same_code_finds_nothing_and_a_20_percent_slowdown_is_caught(tmp_path):
    """Two documents whose runs come from the same distributions: no cell, no ratio is
    significant at the false discovery rate (4 cells x 2 metrics tested). Then B's
    cpu-batched rows 20% slower: caught in GB/s and in the ratio to cpu-serial, and
    --fail-slower turns it into exit 1 past the threshold only."""
    import numpy as np

    rng = np.random.default_rng(11)
    cells = [(b, s) for b in ("cpu-serial", "cpu-batched") for s in (4096, 65536)]
    means = {c: 4.0 + i for i, c in enumerate(cells)}
    a = _doc({c: _noisy(rng, means[c]) for c in cells})
    b = _doc({c: _noisy(rng, means[c]) for c in cells})
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    r = invoke("bench", "compare", str(pa), str(pb), "--json", "--fail-slower", "5")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert all(
        m["verdict"] == "not significant" for c in doc["cells"] for m in c["metrics"].values()
    )
    assert {len(c["metrics"]) for c in doc["cells"]} >= {2}  # GB/s and the ratio to serial
    slow = {
        c: [x * 0.8 for x in _noisy(rng, means[c])]
        if c[0] == "cpu-batched"
        else _noisy(rng, means[c])
        for c in cells
    }
    pb.write_text(json.dumps(_doc(slow)))
    r = invoke("bench", "compare", str(pa), str(pb), "--json", "--fail-slower", "10")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    got = {(c["backend"], c["folio_size"]): c for c in doc["cells"]}
    for s in (4096, 65536):
        assert got["cpu-batched", s]["verdict"] == "slower"
        assert got["cpu-batched", s]["metrics"]["ratio_to_serial"]["verdict"] == "slower"
        assert got["cpu-serial", s]["verdict"] == "not significant"
    assert len(doc["slowdowns"]) >= 2 and "slower" in r.stderr
    r = invoke("bench", "compare", str(pa), str(pb), "--fail-slower", "30")
    assert r.exit_code == 0  # 20% is within a 30% gate
    assert "Benjamini-Hochberg" in r.stdout


def test_the_figure_is_written_where_said_and_never_over_a_file_without_force(tmp_path):
    pytest.importorskip("matplotlib")
    base = [
        "bench",
        "--backends",
        "cpu-serial;emu:channels=2,gbps=20",
        "--sizes",
        "4K",
        "--total",
        "1M",
        "--repeat",
        "2",
        "--warmup",
        "0",
        "--published",
    ]
    r = invoke(*base, "--plot", str(tmp_path / "figure"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert f"plot written to {tmp_path / 'figure.png'}" in r.stderr
    r = invoke(*base, "--plot", str(tmp_path / "figure.png"))
    assert r.exit_code == 2 and "--force" in r.output  # refused before any work
    before = (tmp_path / "figure.png").stat().st_mtime_ns
    r = invoke(*base, "--plot", str(tmp_path / "figure.png"), "--force")
    assert r.exit_code == 0 and (tmp_path / "figure.png").stat().st_mtime_ns >= before
    r = invoke(*base, "--plot", str(tmp_path / "figure.pdf"))
    assert r.exit_code == 0 and (tmp_path / "figure.pdf").read_bytes()[:4] == b"%PDF"
    r = invoke(*base, "--plot", str(tmp_path / "figure.gif"))
    assert r.exit_code == 2 and ".png" in r.output
    r = invoke(*base, "--plot", str(tmp_path / "column.png"), "--plot-size", "column")
    head = (tmp_path / "column.png").read_bytes()[:24]
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert r.exit_code == 0 and (w, h) == (680, 920)  # 3.4 x 4.6 in at 200 dpi


def test_the_figure_draws_each_columns_own_references(tmp_path, monkeypatch):
    """References kept per folio size are drawn as a segment over each column at that
    column's figure; one without them as a line across the figure."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from offload.bench.plot import plot_table

    drawn: dict[str, list] = {"hlines": [], "axhline": []}
    for name in drawn:
        real = getattr(Axes, name)

        def spy(self, *a, _real=real, _name=name, **k):
            drawn[_name].append(a[0])
            return _real(self, *a, **k)

        monkeypatch.setattr(Axes, name, spy)
    sizes = [4096, 2 << 20]
    results = [
        {"backend": "cpu-serial", "folio_size": s, "gbps": [5.0, 5.2], "gbps_median": 5.1}
        for s in sizes
    ]
    refs = {
        "method": "in turn",
        "memcpy": {
            "1": {"gbps": 20.0, "by_size": {"4096": {"gbps": 18.0}, str(2 << 20): {"gbps": 30.0}}}
        },
        "page_loop": {"1": {"gbps": 12.0}},
    }
    doc = {"results": results, "references": refs}
    plot_table(doc, sizes, str(tmp_path / "f.png"), "t")
    assert [list(v) for v in drawn["hlines"]] == [[18.0, 30.0]]
    assert 12.0 in drawn["axhline"] and 20.0 not in drawn["axhline"]
    assert (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "suite",
    [[], ["split", "--policies", "cpu-only"], ["cpu", "--backends", "cpu-serial"], ["overhead"]],
)
def test_every_help_default_is_the_one_that_runs(suite):
    """The --batch-pages, --repeat and --warmup defaults a suite's --help states are the
    ones its run uses (split said 65536 and cut 8192-page batches)."""
    import re

    r = invoke("bench", *suite[:1], "--help")
    text = " ".join(r.stdout.split())
    batch = int(re.search(r"--batch-pages .*?\[default: (\d+);", text).group(1))
    repeat = int(re.search(r"--repeat .*?\[default: (\d+);", text).group(1))
    warmup = int(re.search(r"--warmup .*?\[default: (\d+);", text).group(1))
    args = [*suite, "--sizes", "4K", "--total", "1M", "--json"]
    if not suite:
        args += ["--backends", "cpu-serial"]
    r = invoke("bench", *args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["batch_pages"] == batch and doc["repeat"] == repeat == 5
    assert doc["warmup"] == warmup


def test_the_default_output_is_one_table_and_details_come_on_request():
    base = ["bench", "--backends", "cpu-serial;cpu-batched", *SMALL]
    r = CliRunner().invoke(main, ["--width", "200", *base])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("move_pages of 1M") == 1 and "--details" in r.stdout
    for extra in ("against the hardware", "non-copy us/folio", "published (kernel)"):
        assert extra not in r.stdout
    r = CliRunner().invoke(main, ["--width", "200", *base, "--details"])
    assert "against the hardware" in r.stdout and "non-copy us/4K page" in r.stdout


def test_compare_pairs_a_row_with_the_memcpy_passes_of_its_own_rounds():
    """With references kept per folio size, each run of a row is divided by the memcpy
    pass of its round (on its threads, or fewer where faster), as the bench did; a
    document without them falls back to the passes of the whole run, where they pair."""
    from offload.bench.compare import _ratio_runs

    refs = {
        "memcpy": {
            "1": {"runs": [9.0] * 4, "by_size": {"4096": {"runs": [10.0, 30.0]}}},
            "2": {"runs": [9.0] * 4, "by_size": {"4096": {"runs": [20.0, 20.0]}}},
        }
    }
    row = {"backend": "cpu-batched", "folio_size": 4096, "threads": 2, "gbps": [10.0, 15.0]}
    doc = {"references": refs, "results": [row]}
    assert _ratio_runs(doc, row, "ratio_to_memcpy_t") == [0.5, 0.5]
    for per in refs["memcpy"].values():
        del per["by_size"]
    assert _ratio_runs(doc, row, "ratio_to_memcpy_t") is None  # 4 passes, 2 runs
    refs["memcpy"]["2"]["runs"] = [20.0, 10.0]
    assert _ratio_runs(doc, row, "ratio_to_memcpy_t") == [0.5, 1.5]
