"""DCBM: planning (pure numpy), the thread engine, faults, refusals, counters."""

import os
import threading

import numpy as np
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, FolioBatch, Machine, SpecError, registry
from offload.backends.dcbm import DmaThreads, Faults, channel_bounds, plan_batch


@pytest.mark.parametrize(
    "n, ch, expect",
    [
        (10, 4, [0, 2, 5, 7, 10]),
        (3, 8, [0, 1, 2, 3]),
        (100, 32, None),
        (1, 16, [0, 1]),
    ],
)
def test_channel_slices_follow_the_kernel(n, ch, expect):
    b = channel_bounds(n, ch)
    c = min(ch, n, 16)
    assert b.tolist() == [n * i // c for i in range(c + 1)]
    if expect:
        assert b.tolist() == expect


def batch_of(src, dst, order, n_nodes=2):
    mem = {i: np.zeros((4096, PAGE_SIZE), np.uint8) for i in range(n_nodes)}
    k = len(src)
    return FolioBatch([0] * k, src, [1] * k, dst, order, memory=mem)


def test_plan_one_descriptor_per_folio_without_coalescing():
    b = batch_of(np.arange(10) * 2, np.arange(10) * 2, [1] * 10)
    p = plan_batch(b, 4, coalesce=False)
    assert len(p) == 10 and p.channel.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert p.npages.tolist() == [2] * 10 and (p.stop - p.start == 1).all()


def test_coalesced_runs_never_cross_channels():
    b = batch_of(np.arange(12), np.arange(12) + 100, [0] * 12)
    p = plan_batch(b, 3)
    assert len(p) == 3 and p.npages.tolist() == [4, 4, 4]
    assert p.channel.tolist() == [0, 1, 2] and p.src_pfn.tolist() == [0, 4, 8]
    b2 = batch_of([0, 1, 5, 6], [10, 11, 12, 13], [0] * 4)
    p2 = plan_batch(b2, 1)
    assert p2.npages.tolist() == [2, 2] and p2.start.tolist() == [0, 2]
    assert p2.folios_done(np.array([False, True]), 4).tolist() == [False, False, True, True]


def test_each_channel_issues_its_own_descriptors_in_order():
    # runs of 3, 1 and 2 folios on channel 0 (folios 0..5), a run broken at the channel
    # boundary, then runs on channel 1 (folios 6..11)
    src = np.array([0, 1, 2, 10, 20, 21, 22, 23, 30, 40, 41, 42])
    b = batch_of(src, src + 1000, [0] * 12)
    p = plan_batch(b, 2)
    assert p.start.tolist() == [0, 3, 4, 6, 8, 9]
    assert p.channel.tolist() == [0, 0, 0, 1, 1, 1]
    assert p.of_channel(0).tolist() == [0, 1, 2] and p.of_channel(1).tolist() == [3, 4, 5]
    ok = np.array([True, False, True, True, False, True])
    want = [True] * 3 + [False] + [True] * 4 + [False] + [True] * 3
    assert p.folios_done(ok, 12).tolist() == want


@pytest.mark.parametrize(
    "spec",
    [
        "dma-threads:channels=0",
        "dma-threads:channels=17",
        "dma-threads:timeout=0",
        "dma-threads:channels=two",
    ],
)
def test_bad_specs(spec):
    with pytest.raises(SpecError):
        registry.create(spec)


def migrate_with(mig, n=64, folio=PAGE_SIZE):
    with Machine(nodes="16M,16M", offload=mig, policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(n * folio, folio_size=folio)
        data = fill(p, a, n * folio, 5)
        r = p.move_pages(pages(a, n * folio, folio), [1] * n)
        assert r.ret == 0 and r.status == [1] * n
        assert p.read(a, data.size) == data.tobytes()
        return m.vmstat["pgmigrate_success"]


def test_failed_descriptors_fall_back_and_count():
    mig = DmaThreads(channels=4, coalesce=False, faults=Faults(fail={3, 40}))
    assert migrate_with(mig) == 64
    assert mig.folios_failures == 2 and mig.folios_migrated == 62


def test_every_nth_descriptor_fails():
    mig = DmaThreads(channels=2, coalesce=False, faults=Faults(fail_every=5))
    migrate_with(mig)
    assert mig.folios_failures == 12 and mig.folios_migrated == 52


def test_timeout_aborts_and_the_cpu_copies_the_rest():
    mig = DmaThreads(channels=4, timeout=0.05, coalesce=False, faults=Faults(hang={20}))
    migrate_with(mig)
    assert mig.timeouts == 1
    assert 1 <= mig.folios_failures <= 16  # the hung descriptor and what queued behind it
    assert mig.folios_migrated + mig.folios_failures == 64


def test_a_first_channel_that_hangs_still_wakes_the_others():
    # each channel wakes the next before it copies: channel 0 never finishes (its first
    # descriptor hangs), yet channels 1-3 copy their slices; only the hung one fails
    mig = DmaThreads(channels=4, timeout=0.2, coalesce=False, faults=Faults(hang={0}))
    migrate_with(mig)
    assert mig.timeouts == 1
    assert mig.folios_failures == 1 and mig.folios_migrated == 63


def test_out_of_order_completion_is_tracked_per_descriptor():
    mig = DmaThreads(channels=3, coalesce=False, faults=Faults(reorder=True, fail={0}))
    migrate_with(mig, n=16, folio=4 * PAGE_SIZE)
    assert mig.folios_failures == 1 and mig.folios_migrated == 15


def test_batches_refused_when_every_channel_is_busy():
    import time

    mig = DmaThreads(channels=1, faults=Faults(hang={0}), timeout=1.0)
    mem = {0: np.ones((64, PAGE_SIZE), np.uint8), 1: np.zeros((64, PAGE_SIZE), np.uint8)}
    first = FolioBatch([0], [0], [1], [0], [0], memory=mem)
    t = threading.Thread(target=mig.offload_copy, args=(first,))
    t.start()
    deadline = time.monotonic() + 5
    while mig._free and time.monotonic() < deadline:  # until the hung batch holds the channel
        time.sleep(0.001)
    second = FolioBatch([0], [1], [1], [1], [0], memory=mem)
    mig.offload_copy(second)
    assert mig.batches_refused == 1 and not second.copied.any()
    assert not mem[1][1].any()  # a refused batch writes nothing
    t.join(10)
    assert mig.timeouts == 1 and not first.copied.any()
    mig.close()


def test_unregister_is_offload_off_and_close_stops_channels():
    mig = DmaThreads(channels=2)
    with Machine(nodes="8M,8M", policy="offload-only") as m:
        m.offload.register(mig)
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        p.move_pages(pages(a, 8 * PAGE_SIZE), [1] * 8)
        assert mig.folios_migrated == 8
        m.offload.unregister(mig)
        p.move_pages(pages(a, 8 * PAGE_SIZE), [0] * 8)
        assert mig.folios_migrated == 8
    mig.close()
    assert all(not t.is_alive() for t in mig._engine._threads)


@pytest.mark.parametrize("native_copy", [True, False])
def test_an_abort_stops_the_channels_between_descriptors_and_keeps_each_completion(
    monkeypatch, native_copy
):
    """The thread engine's channels, compiled (one call per channel slice) or not:
    aborted at any moment, every descriptor marked done is copied whole, every one still
    pending is untouched, and nothing is written after abort() returns."""
    import time

    from offload import native
    from offload.backends.dcbm.threads import ThreadEngine

    if native_copy and not native.available():
        pytest.skip("no C compiler here: the channels copy with numpy")
    if not native_copy:
        monkeypatch.setattr(native, "_lib", False)
    n = 4000
    rng = np.random.default_rng(7)
    mem = {0: rng.integers(1, 256, (n, PAGE_SIZE), dtype=np.uint8)}
    mem[1] = np.zeros_like(mem[0])
    b = FolioBatch([0] * n, rng.permutation(n), [1] * n, rng.permutation(n), [0] * n, memory=mem)
    plan = plan_batch(b, 2, coalesce=False)
    engine = ThreadEngine()
    engine.open(2)
    try:
        for delay in (0.0, 0.0005, 0.002):
            mem[1][:] = 0
            job = engine.submit(plan, mem, [0, 1])
            time.sleep(delay)
            engine.abort(job)
            after = mem[1].copy()
            time.sleep(0.01)
            assert np.array_equal(mem[1], after)  # nothing written after the abort
            done = job.status == 1
            assert set(np.unique(job.status).tolist()) <= {0, 1}
            d, s = plan.dst_pfn, plan.src_pfn
            assert np.array_equal(mem[1][d[done]], mem[0][s[done]])
            assert not mem[1][d[~done]].any()
        job = engine.submit(plan, mem, [0, 1])
        assert engine.wait(job, 10) and job.ok.all()
        assert np.array_equal(mem[1][plan.dst_pfn], mem[0][plan.src_pfn])
    finally:
        engine.close()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("pin", [True, False])
def test_each_channel_thread_stays_on_one_cpu_unless_told_not_to(pin):
    cpus = sorted(os.sched_getaffinity(0))
    m = DmaThreads(channels=3, pin=pin)
    b = batch_of(np.arange(12), np.arange(12) + 100, [0] * 12)
    b.memory[0][:12] = 7
    m.offload_copy(b)  # opens the channels
    assert b.copied.all() and (b.memory[1][100:112] == 7).all()
    got = [os.sched_getaffinity(t.native_id) for t in m._threads._threads]
    if pin:
        assert got == [{cpus[c % len(cpus)]} for c in range(3)]
    else:
        assert all(g == set(cpus) for g in got)
    m.close()


def test_every_channel_of_a_batch_is_woken_and_copies_its_slice():
    # each channel wakes the next: with 16 channels, 16 slices, every one copied
    m = DmaThreads(channels=16)
    src = np.arange(0, 64, 2)
    b = batch_of(src, src + 1000, [1] * 32)
    for i, s in enumerate(src):
        b.memory[0][s : s + 2] = i + 1
    m.offload_copy(b)
    assert b.copied.all() and m.descriptors == 16  # two contiguous folios a channel
    for i, s in enumerate(src):
        assert (b.memory[1][s + 1000 : s + 1002] == i + 1).all()
    m.close()
