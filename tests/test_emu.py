"""The emulated engine: it moves every byte, completes no earlier than its model says,
gives nothing up when aborted before that, and its rows say they are emulated."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from offload import PAGE_SIZE, BadArgument, FolioBatch, registry
from offload.backends.dcbm.emu import EngineModel
from offload.cli import main


def _batch(n: int, order: int = 0) -> FolioBatch:
    rng = np.random.default_rng(3)
    k = 1 << order
    mem = {0: rng.integers(1, 256, (2 * n * k, PAGE_SIZE), dtype=np.uint8)}
    mem[1] = np.zeros_like(mem[0])
    src = rng.permutation(2 * n)[:n] * k
    dst = rng.permutation(2 * n)[:n] * k
    return FolioBatch([0] * n, src, [1] * n, dst, [order] * n, memory=mem)


def _copied_right(b: FolioBatch) -> bool:
    k = int(b.npages[0])
    for s, d in zip(b.src_pfn.tolist(), b.dst_pfn.tolist()):
        if not np.array_equal(b.memory[1][d : d + k], b.memory[0][s : s + k]):
            return False
    return True


def test_the_model_of_a_channel():
    m = EngineModel(gbps=2.0, setup_us=10, per_folio_us=1.0, max_gbps=3.0)
    # 4 busy channels share 3 GB/s: 0.75 each
    assert m.seconds(100, 750_000, 4) == pytest.approx(10e-6 + 100e-6 + 1e-3)
    assert EngineModel(gbps=2.0).seconds(0, 2_000_000, 1) == pytest.approx(1e-3)


@pytest.mark.parametrize("channels", [1, 4])
def test_a_batch_completes_no_earlier_than_the_model_and_moves_every_byte(channels):
    mig = registry.create(f"emu:channels={channels},gbps=0.5,setup_us=2000,per_folio_us=2")
    b = _batch(256)
    per_channel = 256 // channels
    want = 2000e-6 + 2e-6 * per_channel + per_channel * PAGE_SIZE / 0.5e9
    t0 = time.perf_counter()
    mig.offload_copy(b)
    took = time.perf_counter() - t0
    mig.close()
    assert b.copied.all() and _copied_right(b)
    assert took >= want * 0.999


def test_an_engine_slower_than_its_deadline_gives_the_batch_back_unmarked():
    """The driver's timeout comes before the model's completion: every descriptor stays
    pending (the CPU copies them), none is half-counted."""
    mig = registry.create("emu:channels=2,gbps=0.001,timeout=0.05")
    b = _batch(256)  # 128 pages a channel at 1 MB/s: 0.5 s, ten times the deadline
    t0 = time.perf_counter()
    mig.offload_copy(b)
    assert not b.copied.any() and mig.timeouts == 1
    assert time.perf_counter() - t0 < 0.5  # the abort ends the wait, too
    mig.close()


def test_bad_parameters_are_refused():
    from offload.backends.dcbm.emu import Emu

    for kw in ({"gbps": 0}, {"gbps": float("nan")}, {"setup_us": -1}, {"max_gbps": True}):
        with pytest.raises(BadArgument):
            Emu(**kw)


def test_its_rows_are_marked_emulated_in_the_table_and_the_json():
    args = [
        "bench",
        "--backends",
        "cpu-serial;emu:channels=2,gbps=20",
        "--sizes",
        "64K",
        "--total",
        "1M",
        "--repeat",
        "1",
        "--warmup",
        "0",
    ]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["backend"]: x for x in json.loads(r.stdout)["results"]}
    assert rows["emu:channels=2,gbps=20"]["emulated"] is True
    assert rows["cpu-serial"]["emulated"] is False
    r = CliRunner().invoke(main, args)
    assert "emu:channels=2,gbps=20 (emulated)" in r.output
