"""``offload gpu-check``: the one prepared device check. Without a GPU it says so and
exits 4 at once; with --fake the whole sequence runs against the CuPy stand-in."""

from __future__ import annotations

import json
import time
import types

import pytest
from click.testing import CliRunner
from conftest import GPU_OK

from offload.backends.dcbm.cupy_engine import load_costs
from offload.cli import main


@pytest.mark.skipif(GPU_OK, reason="a GPU is usable here: the check would run for real")
def test_without_a_gpu_it_says_why_and_exits_4_at_once(tmp_path):
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["gpu-check", str(tmp_path / "out")])
    assert r.exit_code == 4
    assert "no usable GPU" in r.output and time.monotonic() - t0 < 10
    assert not (tmp_path / "out" / "report.json").exists()


def test_the_fake_run_goes_through_the_whole_sequence(tmp_path):
    from offload.backends.dcbm import standin

    standin.log["registered"].clear()  # what another test left pinned is not this one's
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        ["gpu-check", "--fake", "--total", "4M", "--sizes", "4K,2M", "--channels", "1,2", str(out)],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "offload-gpu-check/1" and report["fake"] is True
    assert report["tests"]["ran"] and report["tests"]["exit"] == 0
    assert 0 < report["descriptor_us_per_folio"] < 1
    rows = report["rows"]
    names = {r["backend"] for r in rows}
    assert {"cpu-serial", "cpu-batched"} <= names
    for path in ("memcpy", "kernel", "batch", "auto"):
        assert {f"cupy:channels=1,path={path}", f"cupy:channels=2,path={path}"} <= names
    assert all(r.get("verified") for r in rows) and not any("error" in r for r in rows)
    gpu = [r for r in rows if r["backend"].startswith("cupy")]
    assert all(r["offloaded_fraction"] == 1.0 and r["engine_error"] is None for r in gpu)
    assert all(r["ratio_to_cpu_serial"] > 0 for r in rows)
    assert report["ceilings_gbps"]["dram"] > 0
    # the per-path costs it measured are what cupy:costs= reads
    assert set(load_costs(str(out / "cupy-costs.json"))) == {"memcpy", "kernel", "batch"}
    assert not standin.log["registered"]  # every engine closed: no host memory left pinned
    log = (out / "log.txt").read_text()
    assert "descriptor building" in log and "cpu-serial" in log


@pytest.mark.parametrize(
    "args",
    [["--paths", "warp"], ["--channels", "0"], ["--total", "3K"], ["--sizes", "huge"]],
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, args):
    r = CliRunner().invoke(main, ["gpu-check", "--fake", *args, str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "out").exists()


def test_it_runs_where_only_numpy_click_pytest_and_cupy_are(tmp_path):
    """The GPU machine has numpy, click, pytest and CuPy, maybe nothing else."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('rich', 'jsonschema', 'hypothesis', 'matplotlib'): sys.modules[m] = None\n"
        "from offload.cli import main\n"
        "main(['gpu-check', '--fake', '--total', '2M', '--sizes', '4K', '--channels', '1',"
        " '--paths', 'memcpy', '--no-tests', sys.argv[1]])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "report.json").exists()


def test_a_row_the_engine_did_not_copy_is_said_so(tmp_path, monkeypatch):
    """A path that fails to issue falls back to the CPU: the row says so, with the error,
    and is not judged as the GPU's."""
    from offload.backends.dcbm import cupy_engine

    def broken(self, *a, **kw):
        raise RuntimeError("cuMemcpyBatchAsync: CUDA_ERROR_INVALID_VALUE")

    monkeypatch.setattr(cupy_engine.CupyEngine, "_issue_batch", broken)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "gpu-check",
            "--fake",
            "--no-tests",
            "--total",
            "2M",
            "--sizes",
            "4K",
            "--channels",
            "1",
            "--paths",
            "batch,memcpy",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = {x["backend"]: x for x in json.loads((out / "report.json").read_text())["rows"]}
    bad = rows["cupy:channels=1,path=batch"]
    assert bad["offloaded_fraction"] == 0.0 and "INVALID_VALUE" in bad["engine_error"]
    assert bad["verified"]  # the CPU still moved every byte
    assert rows["cupy:channels=1,path=memcpy"]["offloaded_fraction"] == 1.0
    assert "only 0% copied by the engine" in r.output


def test_no_row_starts_after_the_budget_and_the_report_is_written_as_it_goes(tmp_path, monkeypatch):
    # the check's clock advances 0.2 s at each reading, so the 1 s budget runs out after
    # a few rows however fast this machine is
    from offload.bench import gpu_check

    ticks = iter(range(10**6))
    clock = types.SimpleNamespace(**vars(time))
    clock.monotonic = lambda: 0.2 * next(ticks)
    monkeypatch.setattr(gpu_check, "time", clock)
    out = tmp_path / "out"
    args = ["gpu-check", "--fake", "--no-tests", "--total", "8M", "--sizes", "4K,64K,2M"]
    r = CliRunner().invoke(main, [*args, "--budget", "1", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is False
    full = 3 * (2 + 4 * 3)  # sizes x (the references + paths x channels)
    assert len(report["rows"]) < full
    assert "rows not run (--budget)" in r.output
