"""The split by cost models (policy ``adaptive``, several providers): each side's cost fitted
online, each batch split to finish soonest. Driven here with simulated sides of known
cost (no timing in unit tests), and once through a machine, for the bytes."""

from __future__ import annotations

import numpy as np
import pytest

from offload import PAGE_SIZE, Machine
from offload.costmodel import CallCost
from offload.multisplit import MultiSplit, water_fill
from offload.scheduler import parse_policy


def _drive(costs: list[CallCost], folios: int, batches: int, noise=0.03, together=1.0):
    """Run *batches* batches of *folios* 4 KiB folios over simulated sides; a batch over
    several sides takes *together* times its slowest side."""
    rng = np.random.default_rng(1)
    s = MultiSplit()
    keys = [f"side{i}" for i in range(len(costs))]
    allowed = np.ones((len(costs), folios), dtype=bool)
    npages = np.ones(folios, dtype=np.int64)
    walls, shares = [], []
    for _ in range(batches):
        who, predicted, probe, _ = s.choose(keys, allowed, npages, folios * PAGE_SIZE)
        calls = []
        for i, c in enumerate(costs):
            k = int((who == i).sum())
            t = float(c.time(k, k * PAGE_SIZE)) * (1 + noise * rng.standard_normal())
            calls.append((k, k * PAGE_SIZE, t) if k else None)
        used = [c[2] for c in calls if c is not None]
        wall = max(used) * (together if len(used) > 1 else 1.0)
        s.learn(keys, calls, predicted, wall, probe)
        walls.append(wall)
        shares.append([int((who == i).sum()) / folios for i in range(len(costs))])
    return s, walls, shares


def _best(costs: list[CallCost], folios: int) -> float:
    nb = folios * PAGE_SIZE
    fixed = np.array([c.fixed_s for c in costs])
    var = np.array([float(c.time(folios, nb)) - c.fixed_s for c in costs])
    return water_fill(fixed, var)[1]


@pytest.mark.parametrize(
    "costs",
    [
        [CallCost(50e-6, 0.0, 10.0), CallCost(200e-6, 0.05e-6, 30.0)],  # offload is faster
        [CallCost(20e-6, 0.02e-6, 12.0), CallCost(20e-6, 0.5e-6, 12.0)],  # equal bandwidth
        [CallCost(30e-6, 0.0, 20.0), CallCost(3e-3, 0.0, 5.0)],  # offload not worth it
        [CallCost(30e-6, 0.0, 10.0), CallCost(100e-6, 0.0, 8.0), CallCost(400e-6, 0.0, 20.0)],
    ],
)
def test_the_split_reaches_the_closed_form_optimum_after_its_probes(costs):
    folios = 8192
    s, walls, _ = _drive(costs, folios, 24)
    best = _best(costs, folios)
    rep = s.report()
    probes = 3 * len(costs)  # per side: a warm-up, a whole batch, half a batch
    assert rep["probes"] == probes
    assert [x["probe"] for x in rep["log"]] == [True] * probes + [False] * (24 - probes)
    # every batch after the probes within 5% of the best (3% noise on each side)
    assert np.median(walls[probes:]) <= best / 0.95
    assert max(walls[probes:]) <= best / 0.90
    # and the model predicts what it then measures
    assert rep["median_abs_error_after_8"] <= 0.15


def test_a_handful_of_folios_is_not_offloaded_when_its_fixed_cost_is_not_worth_it():
    costs = [CallCost(5e-6, 0.0, 10.0), CallCost(500e-6, 0.0, 50.0)]
    _, _, shares = _drive(costs, 4, 16)
    assert all(sh == [1.0, 0.0] for sh in shares[6:])


def test_sides_that_slow_each_other_are_not_split_once_that_is_measured():
    """Two equal sides that take 2.5x as long together: one alone wins, and the model
    learns it from the split batches it measured."""
    costs = [CallCost(20e-6, 0.0, 10.0), CallCost(20e-6, 0.0, 10.0)]
    s, walls, shares = _drive(costs, 4096, 24, together=2.5)
    alone = float(costs[0].time(4096, 4096 * PAGE_SIZE))
    assert sum(1 for sh in shares[6:] if 0 < sh[0] < 1) <= 1  # at most one split to learn
    assert np.median(walls[8:]) <= alone / 0.95
    assert s.report()["interference"][2] > 2.0


def test_the_policy_is_parsed_and_moves_every_byte():
    assert parse_policy("adaptive").kind == parse_policy("model").kind == "adaptive"
    with Machine(
        nodes="24M,24M",
        cpu="cpu-batched",
        offload="emu:channels=2,gbps=5,setup_us=50",
        policy="adaptive",
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
        rep = m.offload.stats["split_by_folio_size"][PAGE_SIZE]
        # both sides calibrated on scratch buffers when first used: no probe but, where
        # the side not chosen is predicted close to the chosen one, one batch checking it
        assert rep["batches"] == 3 * (2048 // 256) and rep["probes"] <= 1
        cpu, off = rep["sides"]["cpu"], rep["sides"]["1:" + m.offload.active.spec]
        assert cpu is not None and off is not None
        assert all(x["measured_s"] > 0 for x in rep["log"])
        assert m.audit() == []


def _drive_seeded(
    true: list[CallCost],
    seeds: list[CallCost],
    batches: int,
    together: float = 4.0,
    home: str | None = None,
):
    """Sides seeded by a calibration (*seeds*) whose calls really cost *true*; no noise;
    a split over several sides costs *together* times its slowest side (4x: the model
    learns to keep one); *home* keeps near ties."""
    s = MultiSplit(home=home)
    keys = [f"side{i}" for i in range(len(true))]
    folios = 256
    allowed = np.ones(len(true), dtype=bool)
    npages = np.ones(folios, dtype=np.int64)
    used = []
    for _ in range(batches):
        who, predicted, probe, _ = s.choose(keys, allowed, npages, folios * PAGE_SIZE, seeds)
        calls = []
        for i, c in enumerate(true):
            k = int((who == i).sum())
            calls.append((k, k * PAGE_SIZE, float(c.time(k, k * PAGE_SIZE))) if k else None)
        split = sum(c is not None for c in calls) > 1
        wall = max(c[2] for c in calls if c is not None) * (together if split else 1.0)
        s.learn(keys, calls, predicted, wall, probe)
        used.append([c is not None for c in calls])
    return s, used


def test_a_seed_close_to_the_best_is_checked_by_one_batch():
    # the calibration made side 0 look 20% slower than side 1; it is really twice as fast
    true = [CallCost(0.0, 0.0, 20.0), CallCost(0.0, 0.0, 10.0)]
    seeds = [CallCost(0.0, 0.0, 8.0), CallCost(0.0, 0.0, 10.0)]
    s, used = _drive_seeded(true, seeds, 16)
    assert s.probes == 1
    assert used[-8:] == [[True, False]] * 8  # side 0, checked, now takes every batch


def test_a_seed_close_to_a_split_that_won_is_checked_by_one_batch():
    """Two sides on the same CPUs: a split costs 1.9x its slowest side, more than
    side 0 alone. Both seeds came out slow (side 0's by 23%, side 1's by 44%); the
    split, measured, is predicted as it runs and beats both seeds, while neither side
    runs alone to correct its seed, unless one batch checks the lone side predicted
    closest (the best lone side, which a check against the best lone side never
    picks). Seen on this project's VM: the default table's adaptive row at 0.87x of
    cpu-batched at 4K, fresh memory."""
    true = [CallCost(0.0, 0.0, 26.0), CallCost(0.0, 0.0, 25.0)]
    seeds = [CallCost(0.0, 0.0, 20.0), CallCost(0.0, 0.0, 14.0)]
    s, used = _drive_seeded(true, seeds, 16, together=1.9)
    assert s.probes == 1
    assert used[-8:] == [[True, False]] * 8  # side 0 alone, the faster one


def test_a_split_its_sides_predict_is_trusted_without_a_check():
    """Right seeds, sides that do not slow each other: the split is measured as
    predicted, so side 0 alone (within 1.3x of it) is not checked."""
    true = [CallCost(0.0, 0.0, 30.0), CallCost(0.0, 0.0, 5.0)]
    s, used = _drive_seeded(true, true, 16, together=1.0)
    assert s.probes == 0 and used[-8:] == [[True, True]] * 8


@pytest.mark.parametrize("faster, kept", [(1.015, True), (1.05, False)])
def test_the_home_side_keeps_a_near_tie(faster, kept):
    """Side 1 copies *faster* times as fast as side 0, the home side (the CPU path):
    within HOME_MARGIN the batch stays home, beyond it side 1 takes it. Both seeds are
    right and a split costs 4x: only lone sides compete."""
    from offload.multisplit import HOME_MARGIN

    assert 0.015 < HOME_MARGIN < 0.05
    true = [CallCost(0.0, 0.0, 10.0), CallCost(0.0, 0.0, 10.0 * faster)]
    _, used = _drive_seeded(true, true, 24, home="side0")
    assert used[-8:] == ([[True, False]] if kept else [[False, True]]) * 8
    # without a home side the faster side wins, however little faster
    _, used = _drive_seeded(true, true, 24)
    assert used[-8:] == [[False, True]] * 8


def test_a_seed_far_from_the_best_is_not_probed():
    true = [CallCost(0.0, 0.0, 20.0), CallCost(0.0, 0.0, 10.0)]
    seeds = [CallCost(0.0, 0.0, 4.0), CallCost(0.0, 0.0, 10.0)]  # 2.5x slower: not close
    s, used = _drive_seeded(true, seeds, 16)
    assert s.probes == 0 and used[-8:] == [[False, True]] * 8


def test_the_expected_cost_follows_the_mean_of_bimodal_calls():
    from offload.costmodel import fit_calls
    from offload.multisplit import expected_cost

    f = np.full(40, 256.0)
    b = f * PAGE_SIZE
    t = np.where(np.arange(40) % 2, 2e-3, 3e-3)  # half the calls start 1 ms late
    robust = fit_calls(f, b, t)
    mean = expected_cost(robust, f, b, t)
    assert float(mean.time(256, 256 * PAGE_SIZE)) == pytest.approx(2.5e-3, rel=0.02)
    t1 = np.full(40, 2e-3)
    t1[7] = 20e-3  # one disturbed call: trimmed away
    assert float(expected_cost(fit_calls(f, b, t1), f, b, t1).time(256, 256 * PAGE_SIZE)) == (
        pytest.approx(2e-3, rel=0.02)
    )


def test_a_routine_refit_waits_until_fitting_costs_little_beside_copying():
    from offload.multisplit import FIT_SHARE, REFIT, SideModel

    m = SideModel()
    for _ in range(8):
        m.add(256, 256 * PAGE_SIZE, 1e-3, alone=True)
        m.refresh()
    v = m.version
    m._fit_s = 1.0  # as if a fit took a second: REFIT calls of 1 ms are not worth one
    for _ in range(REFIT):
        m.add(256, 256 * PAGE_SIZE, 1e-3, alone=True)
        m.refresh()
    assert m.version == v
    m.add(256, 256 * PAGE_SIZE, FIT_SHARE * 1.0, alone=True)  # enough copying since
    m.refresh()
    assert m.version == v + 1
    m._fit_s = 1.0
    for _ in range(2):  # two surprises in a row refit at once, whatever the cost
        m.add(256, 256 * PAGE_SIZE, 5e-3, alone=True)
    m.refresh()
    assert m.version == v + 2


SHAPE = (256, 256 * PAGE_SIZE)


def _fitted_side(seconds: float):
    """A side fitted on 4 calls of *seconds*, whose routine refits never come (as if a
    fit took a second)."""
    from offload.multisplit import SideModel

    m = SideModel()
    for _ in range(4):
        m.add(*SHAPE, seconds, alone=True)
        m.refresh()
    m._fit_s = 1.0
    return m


def test_a_steady_bias_too_small_to_surprise_is_corrected_within_a_few_calls():
    # the fit holds slower first calls: later calls come 15% under its prediction, less
    # than a surprise; the cost is scaled to them without waiting for a routine refit
    from offload.multisplit import DRIFT_CALLS

    m, shape = _fitted_side(1.15e-3), SHAPE
    assert m.predict(*shape) == pytest.approx(1.15e-3, rel=0.01)
    times = [1e-3] * DRIFT_CALLS
    times[3] = 3e-3  # one disturbed call among them: left out of the average
    for t in times:
        m.add(*shape, t, alone=True)
        m.refresh()
    assert m.predict(*shape) == pytest.approx(1e-3, rel=0.03)
    v = m.version
    for _ in range(2 * DRIFT_CALLS):  # calls that agree: nothing changes
        m.add(*shape, 1.02e-3, alone=True)
        m.refresh()
    assert m.version == v


def test_calls_within_the_drift_bound_or_beside_others_leave_the_cost_alone():
    from offload.multisplit import DRIFT_CALLS

    m, shape = _fitted_side(1e-3), SHAPE
    v = m.version
    for t in [1.08e-3, 0.93e-3] * DRIFT_CALLS:  # noise, no bias
        m.add(*shape, t, alone=True)
        m.refresh()
    for _ in range(2 * DRIFT_CALLS):  # slow beside others: the interference factor's
        m.add(*shape, 1.5e-3, alone=False)
        m.refresh()
    assert m.version == v


def test_one_seed_check_per_batch_shape():
    # two calibrated sides are close to the best one: only one of them is checked
    true = [CallCost(0.0, 0.0, 10.5), CallCost(0.0, 0.0, 10.0), CallCost(0.0, 0.0, 10.0)]
    seeds = [CallCost(0.0, 0.0, 9.0), CallCost(0.0, 0.0, 10.0), CallCost(0.0, 0.0, 9.5)]
    s, _ = _drive_seeded(true, seeds, 24)
    assert s.probes == 1


def test_a_side_that_joins_later_is_probed_though_the_split_had_settled():
    # side 1 may take nothing for 12 batches (the split settles on side 0), then joins;
    # a third side appears later still: each is warmed up and probed before it is used
    costs = [CallCost(0.0, 0.0, 10.0), CallCost(0.0, 0.0, 30.0), CallCost(0.0, 0.0, 30.0)]
    s = MultiSplit()
    folios = 4096
    npages = np.ones(folios, dtype=np.int64)
    probed = []
    for b in range(36):
        n = 2 if b < 24 else 3
        keys = [f"side{i}" for i in range(n)]
        allowed = np.array([True] + [b >= 12] * (n - 1))
        who, predicted, probe, _ = s.choose(keys, allowed, npages, folios * PAGE_SIZE)
        calls = []
        for i in range(n):
            k = int((who == i).sum())
            calls.append((k, k * PAGE_SIZE, float(costs[i].time(k, k * PAGE_SIZE))) if k else None)
        wall = max(c[2] for c in calls if c is not None)
        s.learn(keys, calls, predicted, wall, probe)
        if probe:
            probed.append((b, [i for i in range(n) if calls[i] is not None]))
    assert [p for p in probed if p[0] < 12] == [(0, [0]), (1, [0]), (2, [0])]
    assert [p for p in probed if 12 <= p[0] < 24] == [(12, [1]), (13, [1]), (14, [1])]
    assert [p[1] for p in probed if p[0] >= 24] == [[2], [2], [2]]
    assert (who == 0).sum() < folios / 2  # the fast sides now take most of the batch
