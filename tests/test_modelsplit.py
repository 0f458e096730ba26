"""The ``model`` policy: each side's cost fitted online, each batch split to finish
soonest. Driven here with simulated sides of known cost (no timing in unit tests), and
once through a machine, for the bytes."""

from __future__ import annotations

import numpy as np
import pytest

from offload import PAGE_SIZE, Machine
from offload.costmodel import CallCost
from offload.modelsplit import ModelSplit
from offload.scheduler import parse_policy


def _drive(cpu: CallCost, off: CallCost, folios: int, nbytes: int, batches: int, noise=0.03):
    rng = np.random.default_rng(1)
    s = ModelSplit()
    walls, fracs = [], []
    for _ in range(batches):
        f, predicted, probe = s.choose(folios, nbytes)
        nc, bc = round(folios * f), int(nbytes * f)
        no, bo = folios - nc, nbytes - bc
        tc = float(cpu.time(nc, bc)) * (1 + noise * rng.standard_normal()) if nc else 0.0
        to = float(off.time(no, bo)) * (1 + noise * rng.standard_normal()) if no else 0.0
        wall = max(tc, to)
        s.learn(f, predicted, (nc, bc, tc), (no, bo, to), wall, probe)
        walls.append(wall)
        fracs.append(f)
    return s, walls, fracs


def _best(cpu: CallCost, off: CallCost, folios: int, nbytes: int) -> float:
    grid = np.linspace(0, 1, 2001)
    return float(
        min(
            max(
                cpu.time(folios * f, nbytes * f) if f > 0 else 0.0,
                off.time(folios * (1 - f), nbytes * (1 - f)) if f < 1 else 0.0,
            )
            for f in grid
        )
    )


@pytest.mark.parametrize(
    "cpu, off",
    [
        (CallCost(50e-6, 0.0, 10.0), CallCost(200e-6, 0.05e-6, 30.0)),  # offload is faster
        (CallCost(20e-6, 0.02e-6, 12.0), CallCost(20e-6, 0.5e-6, 12.0)),  # equal bandwidth
        (CallCost(30e-6, 0.0, 20.0), CallCost(3e-3, 0.0, 5.0)),  # offload not worth it
    ],
)
def test_the_split_reaches_the_closed_form_optimum_within_8_batches(cpu, off):
    folios, nbytes = 8192, 8192 * PAGE_SIZE
    s, walls, _ = _drive(cpu, off, folios, nbytes, 24)
    best = _best(cpu, off, folios, nbytes)
    # from the 9th batch on, every batch that is not a probe is within 5% of the best
    rep = s.report()
    assert rep["probes"] <= 3 + 2  # three calibration batches, at most two more
    late = [w for w, x in zip(walls[8:], rep["log"][8:]) if not x["probe"]]
    assert late and np.median(late) <= best / 0.95
    # and the model predicts what it then measures
    assert rep["median_abs_error_after_8"] <= 0.15


def test_a_handful_of_folios_is_not_offloaded_when_its_fixed_cost_is_not_worth_it():
    cpu, off = CallCost(5e-6, 0.0, 10.0), CallCost(500e-6, 0.0, 50.0)
    s, _, fracs = _drive(cpu, off, 4, 4 * PAGE_SIZE, 16)
    assert all(f == 1.0 for f, x in zip(fracs[3:], s.report()["log"][3:]) if not x["probe"])


def test_the_policy_is_parsed_and_moves_every_byte():
    assert parse_policy("model").kind == "model"
    with Machine(
        nodes="24M,24M",
        cpu="cpu-batched",
        offload="emu:channels=2,gbps=5,setup_us=50",
        policy="model",
        batch_pages=256,
    ) as m:
        p = m.spawn()
        a = p.mmap(8 << 20)
        data = np.random.default_rng(3).integers(0, 256, 8 << 20, dtype=np.uint8)
        p.write(a, data)
        addrs = np.arange(a, a + (8 << 20), PAGE_SIZE)
        for node in (1, 0, 1):
            assert p.move_pages(addrs, [node] * addrs.size).ret == 0
        assert np.array_equal(p.read_array(a, 8 << 20), data)
        rep = m.offload.stats["model_by_folio_size"][PAGE_SIZE]
        assert rep["batches"] == 3 * (2048 // 256) and rep["probes"] >= 3
        assert rep["cpu"]["calls"] >= 1 and rep["offload"]["calls"] >= 1
        assert all(x["measured_s"] > 0 for x in rep["log"])
        assert m.audit() == []
