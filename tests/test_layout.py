"""Node layouts (fresh and aged) and the compiled scattered page copy."""

from __future__ import annotations

import numpy as np
import pytest

from offload import PAGE_SIZE, BadArgument, Machine, devmem, native


def frames(p, a: int, n: int) -> np.ndarray:
    vi, idx = p.mm._translate(a + np.arange(n, dtype=np.int64) * PAGE_SIZE)
    return p.mm._ptes(vi, idx)[2]


def runs(pfn: np.ndarray) -> int:
    return 1 + int((np.diff(pfn) != 1).sum())


@pytest.mark.parametrize("layout, few_runs", [("fresh", True), ("aged", False)])
def test_aged_memory_is_scattered_and_fresh_is_not(layout, few_runs):
    with Machine(nodes="64M,64M", layout=layout, seed=3) as m:
        p = m.spawn()
        a = p.mmap(16 << 20)
        n = runs(frames(p, a, 4096))
        assert (n == 1) if few_runs else n > 1000
        # 2 MiB blocks remain: a THP mapping still gets THPs
        b = p.mmap(4 << 20, folio_size=2 << 20)
        pfn = frames(p, b, 1)[0]
        assert m.nodes[0].order[pfn] == 9


def test_aged_layout_is_reproducible_under_its_seed():
    def layout_of(seed):
        with Machine(nodes="16M,16M", layout="aged", seed=seed) as m:
            p = m.spawn()
            return frames(p, p.mmap(1 << 20), 256)

    assert np.array_equal(layout_of(5), layout_of(5))
    assert not np.array_equal(layout_of(5), layout_of(6))


def test_aged_layout_has_free_blocks_of_every_order():
    with Machine(nodes="64M", layout="aged", seed=1) as m:
        counts = [m.nodes[0].buddy.free_blocks(k) for k in range(10)]
        assert all(c > 0 for c in counts), counts
        assert m.nodes[0].free_pages == m.nodes[0].nr_pages


@pytest.mark.parametrize(
    "kwargs, text",
    [(dict(layout="old"), "layout"), (dict(seed=-1), "seed"), (dict(seed="1"), "seed")],
)
def test_bad_layout_arguments(kwargs, text):
    with pytest.raises(
        BadArgument if "seed" not in kwargs or kwargs["seed"] == -1 else TypeError, match=text
    ):
        Machine(nodes="8M", **kwargs)


@pytest.mark.parametrize("use_native", [True, False])
def test_scattered_page_copy_is_exact_either_way(monkeypatch, use_native):
    if not use_native:
        monkeypatch.setattr(native, "_lib", False)
    elif not native.available():
        pytest.skip("no C compiler here: the numpy path is the only one")
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (512, PAGE_SIZE), dtype=np.uint8)
    dst = np.zeros_like(src)
    sp, dp = rng.permutation(512)[:300], rng.permutation(512)[:300]
    devmem.copy_host_pages(dst, src, dp, sp)
    expect = np.zeros_like(src)
    expect[dp] = src[sp]
    assert np.array_equal(dst, expect)


def test_the_compiled_copy_checks_its_page_numbers():
    if not native.available():
        pytest.skip("no C compiler here")
    src = np.zeros((8, PAGE_SIZE), np.uint8)
    dst = np.zeros_like(src)
    with pytest.raises(IndexError):
        native.copy_pages(dst, src, np.array([8]), np.array([0]))
    with pytest.raises(IndexError):
        native.copy_pages(dst, src, np.array([0]), np.array([-1]))
    assert not native.copy_pages(dst[:, :100], src[:, :100], np.array([0]), np.array([0]))


def test_the_compiled_run_copy_marks_each_descriptor_and_stops_when_asked():
    """native.runs: runs of pages between nodes, a completion per run (only pending runs
    are copied), an abort flag, bounds and layout checks."""
    if not native.available():
        pytest.skip("no C compiler here")
    rng = np.random.default_rng(3)
    memory = {0: rng.integers(0, 256, (64, PAGE_SIZE), dtype=np.uint8)}
    memory[1] = np.zeros_like(memory[0])
    sn, sp = np.array([0, 0, 0, 1]), np.array([0, 10, 20, 0])
    dn, dp, k = np.array([1, 1, 1, 1]), np.array([30, 5, 50, 60]), np.array([4, 2, 3, 1])
    rc = native.runs(memory, sn, sp, dn, dp, k)
    assert rc is not None and len(rc) == 4
    status = np.array([0, -1, 0, 0], dtype=np.int8)  # run 1 failed already: not copied
    assert rc.run(0, 3, status[:3]) == 2
    assert status.tolist() == [1, -1, 1, 0]
    assert np.array_equal(memory[1][30:34], memory[0][0:4])
    assert not memory[1][5:7].any()
    assert np.array_equal(memory[1][50:53], memory[0][20:23])
    stop = np.ones(1, dtype=np.int32)  # aborted: nothing more is copied
    assert rc.run(3, 4, status[3:], stop) == 0 and status[3] == 0
    assert rc.run(1, 2) == 1 and np.array_equal(memory[1][5:7], memory[0][10:12])
    with pytest.raises(IndexError):
        native.runs(memory, sn, sp, dn, np.array([30, 5, 62, 60]), k)  # 62 + 3 > 64
    with pytest.raises(IndexError):
        native.runs(memory, sn, sp, dn, dp, np.array([4, 0, 3, 1]))  # an empty run
    with pytest.raises(BadArgument):
        rc.run(0, 2, np.zeros(3, dtype=np.int8))
    assert native.runs({0: memory[0][:, :100], 1: memory[1]}, sn, sp, dn, dp, k) is None


def _at_offset(rows: int, offset: int, rng) -> np.ndarray:
    """(rows, PAGE_SIZE) random bytes starting *offset* bytes past a page boundary."""
    raw = np.zeros((rows + 1) * PAGE_SIZE + 64, np.uint8)
    start = -raw.ctypes.data % PAGE_SIZE + offset
    a = raw[start : start + rows * PAGE_SIZE].reshape(rows, PAGE_SIZE)
    a[:] = rng.integers(0, 256, a.shape, dtype=np.uint8)
    return a


@pytest.fixture(params=[True, False], ids=["streaming", "plain"])
def stream_mode(request):
    """The compiled copies with streaming stores on, then off (the library is loaded
    afresh and put back afterwards)."""
    if not native.available():
        pytest.skip("no C compiler here")
    saved = native._lib
    native._lib = None
    mp = pytest.MonkeyPatch()
    mp.setenv("FOLIO_OFFLOAD_STREAM", "1" if request.param else "0")
    try:
        assert native.available()
        yield native.streaming()
    finally:
        mp.undo()
        native._lib = saved
        if saved:  # one library in the process: give it back the stores it had
            assert bool(saved.set_stream(int(saved.streaming))) is saved.streaming


@pytest.mark.parametrize("offset", [0, 16, 40])
def test_compiled_copies_are_exact_at_any_alignment(stream_mode, offset):
    rng = np.random.default_rng(offset)
    src = _at_offset(96, offset, rng)
    dst = _at_offset(96, (offset * 3) % 64, rng)
    before = dst.copy()
    sp, dp = rng.permutation(96)[:40], rng.permutation(96)[:40]
    assert native.copy_pages(dst, src, dp, sp)
    expect = before.copy()
    expect[dp] = src[sp]
    assert np.array_equal(dst, expect)
    # runs of 1..5 pages, with completions: every byte, every status, nothing else
    memory = {0: src, 1: dst}
    starts = np.array([0, 7, 20, 33, 50])
    k = np.array([1, 5, 2, 4, 3])
    rc = native.runs(memory, np.zeros(5, int), starts, np.ones(5, int), starts + 40, k)
    status = np.zeros(5, dtype=np.int8)
    assert rc.run(0, 5, status) == 5 and status.tolist() == [1] * 5
    for s, n in zip(starts, k):
        assert np.array_equal(dst[s + 40 : s + 40 + n], src[s : s + n])
    # one contiguous copy of any length from any byte
    for length in (1, 255, 256, 4096 * 3 + 77):
        a, b = src.reshape(-1)[offset : offset + length], dst.reshape(-1)[3 : 3 + length]
        assert native.copy_bytes(b, a) and np.array_equal(a, b)


@pytest.mark.parametrize("grab", [1, 3, 64])
def test_runs_taken_from_a_shared_counter_are_each_copied_once(stream_mode, grab):
    """RunCopy.run_shared: threads take runs from one counter; every run is copied by
    exactly one of them, whatever the grab, and nothing else is written."""
    import threading

    rng = np.random.default_rng(grab)
    n = 50
    src = rng.integers(0, 256, (4 * n, PAGE_SIZE), dtype=np.uint8)
    dst = np.zeros((4 * n + 8, PAGE_SIZE), dtype=np.uint8)
    k = rng.integers(1, 4, n)
    sp = np.arange(n) * 4
    dp = rng.permutation(n) * 4 + 8
    rc = native.runs({0: src, 1: dst}, np.zeros(n, int), sp, np.ones(n, int), dp, k)
    taken = np.zeros(1, dtype=np.int64)
    counts = []
    threads = [
        threading.Thread(target=lambda: counts.append(rc.run_shared(taken, grab))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == n and taken[0] >= n
    expect = np.zeros_like(dst)
    for s, d, m in zip(sp, dp, k):
        expect[d : d + m] = src[s : s + m]
    assert np.array_equal(dst, expect)
    assert rc.run_shared(taken, grab) == 0  # nothing left to take
    with pytest.raises(BadArgument):
        rc.run_shared(np.zeros(1, dtype=np.int32))
    with pytest.raises(BadArgument):
        rc.run_shared(np.zeros(1, dtype=np.int64), 0)


def _cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def test_streaming_stores_are_on_where_the_cpu_has_them_unless_turned_off(stream_mode):
    import os
    import platform

    wanted = os.environ["FOLIO_OFFLOAD_STREAM"] != "0"
    x86 = platform.machine() in ("x86_64", "AMD64")
    assert stream_mode is (wanted and x86 and _cpu_has_avx2())
