"""Hostile and buggy backends: nothing they do loses a byte, leaks a frame or hangs a call.

Each test here reproduces one way the Guarantees were once broken (issue 12).
"""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pytest
from conftest import fill, pages

import offload
from offload import PAGE_SIZE, Machine, MachineClosed, OffloadError
from offload.counters import counters


def used(m: Machine) -> list[int]:
    return [n.nr_pages - n.free_pages for n in m.nodes]


class MarkThenRaise(offload.Migrator):
    name = "mark-then-raise"

    def offload_copy(self, batch):
        batch.copied[:] = True
        raise OSError(errno.EIO, "DMA error")


class MarkHalfThenRaise(offload.Migrator):
    """Copies the first half for real, marks everything, then fails."""

    name = "mark-half-then-raise"

    def offload_copy(self, batch):
        n = len(batch) // 2
        offload.devmem.copy_folios(batch[:n])
        batch.copied[:] = True
        raise RuntimeError("descriptor ring overflow")


@pytest.mark.parametrize("policy", ["offload-only", "static:0.5", "adaptive", "autotune"])
@pytest.mark.parametrize("cls", [MarkThenRaise, MarkHalfThenRaise])
def test_marks_of_a_failed_call_are_never_trusted(cls, policy):
    mig = cls()
    with Machine(nodes="8M,8M", offload=mig, policy=policy, batch_pages=64) as m:
        p = m.spawn()
        a = p.mmap(256 * PAGE_SIZE)
        data = fill(p, a, 256 * PAGE_SIZE, 1)
        assert p.move_pages(pages(a, 256 * PAGE_SIZE), [1] * 256).ret == 0
        assert p.read(a, data.size) == data.tobytes()
        assert mig.folios_migrated == 0
    # the example of the issue, word for word
    with Machine(nodes="8M,8M", offload=MarkThenRaise(), policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(4096)
        p.write(a, b"hello")
        p.move_pages([a], [1])
        assert p.read(a, 5) == b"hello"


def test_a_cpu_path_that_marks_then_raises_loses_nothing():
    with Machine(nodes="8M,8M", cpu=MarkThenRaise()) as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        data = fill(p, a, 64 * PAGE_SIZE, 2)
        assert p.move_pages(pages(a, 64 * PAGE_SIZE), [1] * 64).status == [1] * 64
        assert p.read(a, data.size) == data.tobytes()


def fragment(p, node: int, n: int) -> list[int]:
    """Map *n* single pages on *node*, unmap every other one; return those kept."""
    singles = [p.mmap(PAGE_SIZE, node=node) for _ in range(n)]
    for s in singles[::2]:
        p.munmap(s, PAGE_SIZE)
    return singles[1::2]


def test_a_split_frees_the_unmapped_half_of_a_pinned_thp():
    """The issue's case: a THP half unmapped while pinned, moved to a node with no free
    2M block (-ENOMEM, split, pieces migrate); afterwards nothing stays allocated."""
    with Machine(nodes="8M,4M") as m:
        p = m.spawn()
        kept = fragment(p, 1, 1024)  # node 1: no free 2M block
        a = p.mmap(2 << 20, folio_size=2 << 20)
        data = fill(p, a, 2 << 20, 3)
        pin = p.pin(a)
        p.munmap(a + (1 << 20), 1 << 20)  # the folio stays whole, queued for split
        pin.release()
        assert used(m) == [512, 512]
        r = p.move_pages(pages(a, 1 << 20), [1] * 256)
        assert r.status == [1] * 256
        assert m.vmstat["thp_migration_split"] == 1
        assert used(m) == [0, 512 + 256]  # the unmapped half was freed at the split
        assert p.read(a, 1 << 20) == data[: 1 << 20].tobytes()
        p.munmap(a, 1 << 20)
        for s in kept:
            p.munmap(s, PAGE_SIZE)
        assert used(m) == [0, 0]


def test_a_partly_unmapped_thp_moves_whole_and_is_split_under_pressure():
    """As the kernel's deferred split: the folio stays whole (and, up to 6.9, migrates
    whole) until memory runs short on its node; then its unmapped part is freed."""
    with Machine(nodes="4M,4M", kernel="6.1") as m:
        p = m.spawn()
        a = p.mmap(2 << 20, folio_size=2 << 20)
        data = fill(p, a, 2 << 20, 4)
        p.munmap(a + (1 << 20), 1 << 20)
        assert used(m) == [512, 0]
        assert p.move_pages([a], [1]).status == [1]
        assert m.vmstat["thp_migration_success"] == 1 and m.vmstat["pgmigrate_success"] == 512
        assert p.move_pages(pages(a, 1 << 20), None).status == [1] * 256
        # node 1 has 512 pages left; 768 are asked for: the deferred split frees 256
        b = p.mmap(768 * PAGE_SIZE, node=1, populate=False)
        p.write(b, bytes(768 * PAGE_SIZE))
        assert used(m) == [0, 1024]
        assert p.read(a, 1 << 20) == data[: 1 << 20].tobytes()
        p.munmap(a, 1 << 20)
        p.munmap(b, 768 * PAGE_SIZE)
        assert used(m) == [0, 0]


@pytest.mark.parametrize("hole", [None, 3])
def test_thps_mapped_one_after_another_move_together_with_a_hole_in_one(hole):
    """Several THPs in a row move in one batch (of up to 4096 pages here; the kernel's
    hold 512, one THP), their pages repointed as one slice of the mapping; with one of
    them partly unmapped they take the page-by-page path, and the hole stays unmapped."""
    thp = 2 << 20
    with Machine(nodes="16M,16M", kernel="6.1", batch_pages=4096) as m:
        p = m.spawn()
        a = p.mmap(4 * thp, folio_size=thp)
        data = fill(p, a, 4 * thp, 9)
        if hole is not None:
            p.munmap(a + hole * thp + thp // 2, thp // 4)
        r = p.move_pages([a + i * thp for i in range(4)], [1] * 4)
        assert r.status == [1] * 4 and r.ret == 0
        assert m.vmstat["thp_migration_success"] == 4 and used(m) == [0, 2048]
        kept = [(a, 4 * thp)]
        if hole is not None:
            at = a + hole * thp + thp // 2
            kept = [(a, at - a), (at + thp // 4, a + 4 * thp - at - thp // 4)]
            assert p.move_pages(pages(at, thp // 4), None).status == [-errno.EFAULT] * 128
        for start, n in kept:
            assert p.read(start, n) == data[start - a : start - a + n].tobytes()
        assert set(p.move_pages(pages(a, 4 * thp), None).status) <= {1, -errno.EFAULT}
        assert m.audit() == []


@pytest.mark.parametrize("who_writes", ["parent", "child"])
def test_a_folio_left_partly_mapped_after_copy_on_write_is_queued_for_split(who_writes):
    """The parent unmaps part of an mTHP folio it shares copy-on-write with a child; one
    of them writes a page of it, which gets its own 4 KiB copy (the kernel's wp_page_copy:
    a PTE-mapped large folio is never copied whole). The folio stays shared; once the
    child unmaps it, the parent is its only owner with a hole in it, so it joins the
    deferred split queue, and its pages no one maps come back when memory runs short.
    The frame accounting holds throughout."""
    with Machine(nodes="4M,4M") as m:
        p = m.spawn()
        a = p.mmap(16 * PAGE_SIZE, folio_size=16 * PAGE_SIZE)
        data = fill(p, a, 16 * PAGE_SIZE, 5)
        c = p.fork()
        p.munmap(a + 4 * PAGE_SIZE, 2 * PAGE_SIZE)
        assert m.rmap.deferred == set() and m.audit() == []  # the child maps all of it
        (p if who_writes == "parent" else c).write(a, b"w")
        assert used(m) == [17, 0]  # the folio and one page's copy
        assert m.rmap.deferred == set() and m.audit() == []  # every page is still mapped
        # the child's pages are intact, the parent's hole is still a hole
        want = bytearray(data.tobytes())
        if who_writes == "child":
            want[0:1] = b"w"
        assert c.read(a, 16 * PAGE_SIZE) == bytes(want)
        with pytest.raises(OSError):
            p.read(a + 4 * PAGE_SIZE, 1)
        c.munmap(a, 16 * PAGE_SIZE)
        # the parent's copy of page 0 (it wrote) leaves page 0 of the folio unmapped too
        holes = 3 if who_writes == "parent" else 2
        assert used(m) == [16 + (who_writes == "parent"), 0]
        assert len(m.rmap.deferred) == 1 and m.audit() == []
        mine = bytearray(data.tobytes())
        if who_writes == "parent":
            mine[0:1] = b"w"
        assert p.read(a, 4 * PAGE_SIZE) == bytes(mine[: 4 * PAGE_SIZE])
        assert p.read(a + 6 * PAGE_SIZE, 10 * PAGE_SIZE) == bytes(mine[6 * PAGE_SIZE :])
        # memory runs short on node 0: the split frees the pages no one maps
        free = 1024 - used(m)[0] + holes
        b = p.mmap(free * PAGE_SIZE, populate=False)
        p.write(b, bytes(free * PAGE_SIZE))
        assert m.rmap.deferred == set() and used(m) == [1024, 0] and m.audit() == []
        assert p.read(a + 6 * PAGE_SIZE, 10 * PAGE_SIZE) == bytes(mine[6 * PAGE_SIZE :])


def test_a_busy_dma_cpu_path_still_completes_every_batch():
    """dma-threads as the CPU path refuses batches when its channel is busy."""
    with Machine(nodes="64M,64M", cpu="dma-threads:channels=1") as m:
        errors, procs = [], []

        def worker(k: int) -> None:
            try:
                p = m.spawn()
                a = p.mmap(4 << 20)
                data = fill(p, a, 4 << 20, 10 + k)
                procs.append(p)
                for i in range(20):
                    r = p.move_pages(pages(a, 4 << 20), [(i + 1) % 2] * 1024)
                    assert r.ret == 0, r
                assert p.read(a, data.size) == data.tobytes()
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert m.cpu.batches_refused > 0  # the case this test is about did happen


class LateWriter(offload.Migrator):
    """Hangs until released, then scribbles 0xEE over every destination it was given."""

    name = "late-writer"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.returned = threading.Event()
        self.calls = 0

    def offload_copy(self, batch):
        self.calls += 1
        self.release.wait(30)
        for i in range(len(batch)):
            mem = batch.memory[int(batch.dst_node[i])]
            n = 1 << int(batch.order[i])
            mem[batch.dst_pfn[i] : batch.dst_pfn[i] + n] = 0xEE
        batch.copied[:] = True
        self.returned.set()


def test_a_hung_backend_is_abandoned_and_its_late_writes_land_nowhere():
    mig = LateWriter()
    with Machine(nodes="8M,8M", offload=mig, policy="offload-only", offload_timeout=0.3) as m:
        p = m.spawn()
        a = p.mmap(32 * PAGE_SIZE)
        data = fill(p, a, 32 * PAGE_SIZE, 5)
        assert p.move_pages(pages(a, 32 * PAGE_SIZE), [1] * 32).ret == 0
        assert not mig.returned.is_set()  # the move finished while the call still hangs
        assert p.read(a, data.size) == data.tobytes()
        assert counters(mig).timeouts == 1 and mig.folios_migrated == 0
        assert m.stats["engine"]["quarantined_pages"] == 32
        assert used(m) == [0, 64]  # 32 moved + 32 quarantined
        # while it is stuck, batches go to the CPU at once: the backend is not called (so
        # nothing waits for its deadline again)
        assert p.move_pages(pages(a, 32 * PAGE_SIZE), [0] * 32).ret == 0
        assert counters(mig).batches_skipped >= 1 and mig.calls == 1
        assert counters(mig).timeouts == 1
        mig.release.set()
        assert mig.returned.wait(5)
        deadline = time.monotonic() + 5
        while m.stats["engine"]["quarantined_pages"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.stats["engine"]["quarantined_pages"] == 0
        assert used(m) == [32, 0]
        assert p.read(a, data.size) == data.tobytes()
        # it answers again: new batches reach it
        mig.returned.clear()
        assert p.move_pages(pages(a, 32 * PAGE_SIZE), [1] * 32).ret == 0
        assert mig.calls == 2 and mig.folios_migrated == 32


class Hang(offload.Migrator):
    name = "hang"

    def __init__(self) -> None:
        self.release = threading.Event()

    def offload_copy(self, batch):
        self.release.wait(30)


def test_a_hung_third_party_cpu_path_is_abandoned_too():
    cpu = Hang()
    try:
        with Machine(nodes="8M,8M", cpu=cpu, offload_timeout=0.2) as m:
            p = m.spawn()
            a = p.mmap(16 * PAGE_SIZE)
            data = fill(p, a, 16 * PAGE_SIZE, 6)
            assert p.move_pages(pages(a, 16 * PAGE_SIZE), [1] * 16).ret == 0
            assert p.read(a, data.size) == data.tobytes()
            assert counters(cpu).timeouts == 1
    finally:
        cpu.release.set()


class Raises(offload.Migrator):
    name = "raises"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def offload_copy(self, batch):
        batch.copied[:] = True
        raise self.exc


@pytest.mark.parametrize(
    "exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), MemoryError("x")], ids=type
)
@pytest.mark.parametrize("side", ["offload", "cpu"])
def test_base_exceptions_from_a_backend_do_not_escape(exc, side):
    kw = (
        {"offload": Raises(exc), "policy": "offload-only"}
        if side == "offload"
        else {"cpu": Raises(exc)}
    )
    with Machine(nodes="8M,8M", **kw) as m:
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        data = fill(p, a, 8 * PAGE_SIZE, 7)
        assert p.move_pages(pages(a, 8 * PAGE_SIZE), [1] * 8).ret == 0
        assert p.read(a, data.size) == data.tobytes()


def test_close_waits_for_migrations_and_refuses_new_ones():
    m = Machine(
        nodes="64M,64M",
        cpu="cpu-batched:threads=2",
        offload="dma-threads:channels=2",
        policy="static:0.5",
    )
    p = m.spawn()
    a = p.mmap(16 << 20)
    data = fill(p, a, 16 << 20, 8)
    outcomes: list[str] = []
    started = threading.Event()

    def mover() -> None:
        try:
            for i in range(1000):
                p.move_pages(pages(a, 16 << 20), [(i + 1) % 2] * 4096)
                started.set()
            outcomes.append("finished")
        except MachineClosed:
            outcomes.append("closed")
        except Exception as exc:
            outcomes.append(repr(exc))

    before = set(threading.enumerate())
    t = threading.Thread(target=mover)
    t.start()
    assert started.wait(10)
    m.close()
    t.join(10)
    assert outcomes == ["closed"]
    assert p.read(a, data.size) == data.tobytes()  # memory still readable
    with pytest.raises(OffloadError, match="closed"):
        p.move_pages([a], [1])
    with pytest.raises(MachineClosed):
        p.migrate_pages([0], [1])
    leftover = [x.name for x in set(threading.enumerate()) - before]
    assert not leftover, leftover


class NoInit(offload.Migrator):
    """A plugin that forgets ``super().__init__()`` and keeps a slot-less state."""

    name = "no-init"

    def __init__(self) -> None:
        self.copies = 0

    def offload_copy(self, batch):
        self.copies += 1
        offload.devmem.copy_folios(batch)
        batch.copied[:] = True


@pytest.mark.parametrize("side", ["offload", "cpu"])
def test_a_plugin_needs_no_state_of_ours(side):
    mig = NoInit()
    kw = {"offload": mig, "policy": "offload-only"} if side == "offload" else {"cpu": mig}
    with Machine(nodes="8M,8M", **kw) as m:
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        data = fill(p, a, 8 * PAGE_SIZE, 9)
        assert p.move_pages(pages(a, 8 * PAGE_SIZE), [1] * 8).ret == 0
        assert p.read(a, data.size) == data.tobytes()
        assert mig.copies == 1
        if side == "offload":
            assert mig.folios_migrated == 8 and m.offload.active is mig
    assert not hasattr(mig, "_executor") and "folios_migrated" not in vars(mig)


def test_huge_reads_fail_before_allocating():
    with Machine(nodes="8M,8M") as m:
        p = m.spawn()
        a = p.mmap(PAGE_SIZE)
        with pytest.raises(OSError) as e:
            p.read(a, 1 << 50)
        assert e.value.errno == errno.EFAULT
        with pytest.raises(OSError) as e:
            p.read_array(a + PAGE_SIZE, 1 << 40)
        assert e.value.errno == errno.EFAULT


class Stray(offload.Migrator):
    """Copies right, but also writes where it should not."""

    name = "stray"

    def __init__(self, where: str) -> None:
        self.where = where

    def offload_copy(self, batch):
        for i in range(len(batch)):
            src = batch.memory[int(batch.src_node[i])]
            dst = batch.memory[int(batch.dst_node[i])]
            s, d, n = int(batch.src_pfn[i]), int(batch.dst_pfn[i]), 1 << int(batch.order[i])
            dst[d : d + n] = src[s : s + n]
            if self.where == "after":
                dst[d + n] = 0xAB
            elif self.where == "before":
                dst[d - 1] = 0xAB
            elif self.where == "source":
                src[s : s + n] = 0
        batch.copied[:] = True


@pytest.mark.parametrize("where", ["after", "before", "source"])
def test_verify_catches_and_undoes_writes_next_to_destinations(where):
    mig = Stray(where)
    with Machine(nodes="8M,8M", offload=mig, policy="offload-only", verify=True) as m:
        p = m.spawn()
        b = p.mmap(64 * PAGE_SIZE, node=1)  # fills node 1 from its first frame
        bdata = fill(p, b, 64 * PAGE_SIZE, 10)
        p.munmap(b + 8 * PAGE_SIZE, PAGE_SIZE)  # a hole the destination will fall into
        a = p.mmap(PAGE_SIZE)
        p.write(a, b"hello")
        assert p.move_pages([a], [1]).status == [1]
        assert p.read(a, 5) == b"hello"
        assert p.read(b, 8 * PAGE_SIZE) == bdata[: 8 * PAGE_SIZE].tobytes()
        assert p.read(b + 9 * PAGE_SIZE, 55 * PAGE_SIZE) == bdata[9 * PAGE_SIZE :].tobytes()
        assert counters(mig).stray_writes == 1 == m.engine.stats.stray_writes


def test_verify_blames_no_one_for_writes_by_processes():
    """Accessors write while an honest backend copies: nothing counts as a stray write."""
    with Machine(
        nodes="16M,16M",
        offload="dma-threads:channels=2",
        policy="static:0.5",
        verify=True,
        batch_pages=64,
    ) as m:
        p = m.spawn()
        a = p.mmap(256 * PAGE_SIZE)
        b = p.mmap(256 * PAGE_SIZE)
        stop = threading.Event()
        last = np.zeros(256, np.uint8)

        def writer() -> None:
            rng = np.random.default_rng(11)
            while not stop.is_set():
                i, v = int(rng.integers(256)), int(rng.integers(1, 256))
                p.write(b + i * PAGE_SIZE, bytes([v]) * PAGE_SIZE)
                last[i] = v

        t = threading.Thread(target=writer)
        t.start()
        try:
            for r in range(10):
                assert p.move_pages(pages(a, 256 * PAGE_SIZE), [(r + 1) % 2] * 256).ret == 0
        finally:
            stop.set()
            t.join()
        assert m.engine.stats.stray_writes == 0
        got = p.read_array(b, 256 * PAGE_SIZE).reshape(256, PAGE_SIZE)
        assert (got == last[:, None]).all()


def test_counters_survive_a_migrator_dying_while_the_table_is_held():
    # a weakref callback runs inside whatever allocation triggers the collection, even
    # one made while counters() holds its lock: it must not take that lock again
    import gc

    import offload.counters as C
    from offload import Migrator

    class Cyclic(Migrator):
        name = "cyclic"

        def offload_copy(self, batch):
            pass

    doomed = Cyclic()
    doomed.me = doomed  # only the cycle collector frees it
    C.counters(doomed).add(folios_migrated=1)
    key = id(doomed)
    del doomed
    gc.disable()
    try:
        real = C.MigratorCounters

        def collecting(*a, **k):  # a collection inside counters(), as GC may do
            gc.collect()
            return real(*a, **k)

        C.MigratorCounters = collecting
        try:
            fresh = Cyclic()
            done = threading.Event()
            t = threading.Thread(target=lambda: (C.counters(fresh), done.set()), daemon=True)
            t.start()
            assert done.wait(5), "counters() deadlocked on its own weakref callback"
        finally:
            C.MigratorCounters = real
    finally:
        gc.enable()
    C.counters(Cyclic())  # the next use drops the dead entry
    assert key not in C._TABLE or C._TABLE[key][0]() is not None
