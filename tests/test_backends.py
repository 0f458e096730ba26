"""The conformance suite over every built-in backend, and cpu-batched's layouts."""

import numpy as np
import pytest
from conftest import CPU_BACKENDS

from offload import PAGE_SIZE, FolioBatch, registry
from offload.testing import MigratorConformance, check_batch_copy, check_migrator


@pytest.fixture
def small_shares(monkeypatch):
    """cpu-batched deals out shares of 64 pages: the small batches of these tests then
    run on every thread asked for (by default a share is at least 2 MiB)."""
    from offload.backends import cpu_batched

    monkeypatch.setattr(cpu_batched, "_MIN_PAGES_PER_THREAD", 64)


@pytest.mark.parametrize("spec", CPU_BACKENDS + ["cpu-batched:threads=3"])
class TestBuiltins(MigratorConformance):
    @pytest.fixture(autouse=True)
    def _spec(self, spec, small_shares):
        self.spec = spec

    def make_migrator(self):
        return registry.create(self.spec)


class Liar(__import__("offload").Migrator):
    """Marks folios it never copied: the conformance suite must catch it."""

    name = "liar"

    def offload_copy(self, batch):
        batch.copied[:] = True


def test_conformance_catches_a_lying_backend():
    with pytest.raises(AssertionError, match="wrong bytes"):
        check_batch_copy(Liar(), "scattered")


def test_check_migrator_passes_for_builtins(small_shares):
    check_migrator(lambda: registry.create("cpu-batched:threads=2"))


@pytest.mark.parametrize("pages, used", [(512, 1), (1023, 1), (1024, 2), (8192, 2)])
def test_cpu_batched_gives_a_thread_a_share_worth_its_hand_off(monkeypatch, pages, used):
    """A second thread only for a share of 512 pages (2 MiB) or more: below that, handing
    it over cost more than it saved."""
    from offload.backends.cpu_batched import CpuBatched

    shares = []
    real = CpuBatched._run
    monkeypatch.setattr(
        CpuBatched, "_run", lambda self, jobs, fn: (shares.append(len(jobs)), real(self, jobs, fn))
    )
    rng = np.random.default_rng(pages)
    mem = {
        0: rng.integers(0, 256, (16384, PAGE_SIZE), dtype=np.uint8),
        1: np.zeros((16384, PAGE_SIZE), dtype=np.uint8),
    }
    src, dst = rng.permutation(16384)[:pages], rng.permutation(16384)[:pages]
    batch = FolioBatch(
        np.zeros(pages, np.int32),
        src,
        np.ones(pages, np.int32),
        dst,
        np.zeros(pages, np.int8),
        memory=mem,
    )
    b = registry.create("cpu-batched:threads=2")
    try:
        b.offload_copy(batch)
    finally:
        b.close()
    assert shares == [used]
    assert batch.copied.all() and np.array_equal(mem[1][dst], mem[0][src])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_cpu_batched_layouts(threads, small_shares):
    """Runs, dst-only runs and scattered pages, one large folio chunked over threads."""
    rng = np.random.default_rng(threads)
    mem = {
        0: rng.integers(0, 256, (4096, PAGE_SIZE), dtype=np.uint8),
        1: np.zeros((4096, PAGE_SIZE), dtype=np.uint8),
    }
    cases = [
        ([0], [512], [1], [1024], [9]),  # one THP
        ([0] * 300, np.arange(300), [1] * 300, np.arange(300) + 7, [0] * 300),
        ([0] * 300, rng.permutation(3000)[:300], [1] * 300, np.arange(300), [0] * 300),
        ([0] * 300, rng.permutation(3000)[:300], [1] * 300, rng.permutation(3000)[:300], [0] * 300),
    ]
    b = registry.create(f"cpu-batched:threads={threads}")
    for sn, sp, dn, dp, order in cases:
        mem[1][:] = 0
        batch = FolioBatch(sn, sp, dn, dp, order, memory=mem)
        b.offload_copy(batch)
        assert batch.copied.all()
        sp_all, dp_all = batch.page_indices()
        assert np.array_equal(mem[1][dp_all], mem[0][sp_all])
        untouched = np.setdiff1d(np.arange(4096), dp_all)
        assert not mem[1][untouched].any()
    b.close()


def test_batch_runs_and_selection():
    mem = {0: np.zeros((64, PAGE_SIZE), np.uint8), 1: np.zeros((64, PAGE_SIZE), np.uint8)}
    b = FolioBatch(
        [0, 0, 0, 0], [0, 1, 2, 8], [1, 1, 1, 1], [4, 5, 8, 10], [0, 0, 1, 0], memory=mem
    )
    runs = b.runs()
    assert runs.npages.tolist() == [2, 2, 1] and runs.start.tolist() == [0, 2, 3]
    assert b.runs("dst").npages.tolist() == [2, 3]
    assert b.nbytes == 5 * PAGE_SIZE and len(b) == 4
    sub = b[[1, 3]]
    sub.copied[:] = True
    b.absorb(sub)
    assert b.copied.tolist() == [False, True, False, True]
    assert len(b[b.order > 0]) == 1 and len(b[1:3]) == 2
    with pytest.raises(TypeError):
        b[0]
    with pytest.raises(ValueError, match="dst_pfn"):
        FolioBatch([0], [0], [1], [0, 1], [0], memory=mem)


@pytest.mark.parametrize(
    "sel",
    [slice(None), slice(0), slice(1, 3), slice(None, None, 2), slice(-2, None), slice(3, 0, -1)],
)
def test_batch_slice_is_the_index_array_cut(sel):
    """A sub-batch cut by a slice knows the same positions as one cut by the same index
    array, in the same order, with copies of the same fields."""
    mem = {0: np.zeros((64, PAGE_SIZE), np.uint8), 1: np.zeros((64, PAGE_SIZE), np.uint8)}
    b = FolioBatch(
        [0, 0, 0, 0], [0, 2, 4, 8], [1, 1, 1, 1], [4, 6, 9, 12], [1, 0, 2, 1], memory=mem
    )
    want = np.arange(4)[sel]
    sub = b[sel]
    assert sub.index.tolist() == want.tolist()
    assert sub.src_pfn.tolist() == b.src_pfn[want].tolist()
    assert sub.order.tolist() == b.order[want].tolist()
    assert sub.nbytes == int((1 << b.order[want].astype(np.int64)).sum()) * PAGE_SIZE


@pytest.mark.parametrize(
    "orders", [[], [0], [9, 9, 9], [0, 0, 0, 0], [2, 2, 0], [0, 9], [3, 3, 3, 1]]
)
def test_total_pages_of_one_size_and_of_several(orders):
    from offload.arrays import total_pages

    order = np.array(orders, dtype=np.int8)
    assert total_pages(order) == sum(1 << k for k in orders)
