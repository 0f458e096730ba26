"""Engine rules: batch cutting, retries, fresh copies, offload never changes outcomes."""

import errno

import numpy as np
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, FolioBatch, Machine, Migrator


class Recorder(Migrator):
    """Copies like the CPU would and records each batch it was given."""

    name = "recorder"

    def __init__(self, hook=None):
        super().__init__()
        self.sizes = []
        self.hook = hook

    def offload_copy(self, batch: FolioBatch) -> None:
        self.sizes.append([int(x) for x in batch.order])
        if self.hook:
            self.hook(self, batch)
        for i in range(len(batch)):
            n = 1 << int(batch.order[i])
            batch.memory[int(batch.dst_node[i])][batch.dst_pfn[i] : batch.dst_pfn[i] + n] = (
                batch.memory[int(batch.src_node[i])][batch.src_pfn[i] : batch.src_pfn[i] + n]
            )
            batch.copied[i] = True


def machine_with(mig, **kw):
    return Machine(nodes="16M,16M", offload=mig, policy="offload-only", **kw)


def test_batches_are_cut_as_the_kernel_cuts_them():
    rec = Recorder()
    with machine_with(rec) as m:
        p = m.spawn()
        a = p.mmap(600 * PAGE_SIZE)
        p.move_pages(pages(a, 600 * PAGE_SIZE), [1] * 600)
        assert [len(s) for s in rec.sizes] == [512, 88]
        rec.sizes.clear()
        t = p.mmap(1 << 21, folio_size=1 << 21)
        s = p.mmap(10 * PAGE_SIZE)
        p.move_pages([t] + pages(s, 10 * PAGE_SIZE), [1] * 11)
        assert rec.sizes == [[9], [0] * 10]
        rec.sizes.clear()
        s2 = p.mmap(511 * PAGE_SIZE)
        t2 = p.mmap(1 << 21, folio_size=1 << 21)
        p.move_pages(pages(s2, 511 * PAGE_SIZE) + [t2], [1] * 512)
        assert rec.sizes == [[0] * 511 + [9]]
        assert m.engine.stats.tlb_flushes == 5  # one flush per batch


@pytest.mark.parametrize("policy", ["offload-only", "adaptive", "autotune"])
def test_a_pass_over_no_folios_makes_no_batch(policy):
    # the pass over split folios can be empty (a split that left none to move): no copy
    # step runs (the adaptive policy crashed on a batch of no folio)
    from offload.constants import MR_SYSCALL
    from offload.folios import Folios

    rec = Recorder()
    with Machine(nodes="16M,16M", offload=rec, policy=policy) as m:
        rc = m.engine._one_pass(Folios.concat([]), MR_SYSCALL)
        assert rc.size == 0 and rec.sizes == [] and m.audit() == []


def test_larger_batch_limit():
    rec = Recorder()
    with machine_with(rec, batch_pages=4096) as m:
        p = m.spawn()
        a = p.mmap(600 * PAGE_SIZE)
        p.move_pages(pages(a, 600 * PAGE_SIZE), [1] * 600)
        assert [len(s) for s in rec.sizes] == [600]


def test_folio_pinned_between_copy_and_move_is_not_moved_with_a_stale_copy():
    pinned = []

    def hook(mig, batch):
        if not pinned:
            # a DMA writer takes a pin and changes the source after this copy
            node = mig.machine.nodes[int(batch.src_node[0])]
            head = int(batch.src_pfn[0])
            node.pins[head] += 1
            node.frames[head, :4] = np.frombuffer(b"NEW!", np.uint8)
            pinned.append((node, head))

    rec = Recorder(hook)
    with machine_with(rec) as m:
        rec.machine = m
        p = m.spawn()
        a = p.mmap(2 * PAGE_SIZE)
        p.write(a, b"old!")
        p.write(a + PAGE_SIZE, b"two!")
        r = p.move_pages([a, a + PAGE_SIZE], [1, 1])
        assert r.status == [-errno.EBUSY, 1]
        assert p.read(a, 4) == b"NEW!"  # the stale copy was thrown away
        assert m.nodes[1].free_pages == m.nodes[1].nr_pages - 1
        node, head = pinned[0]
        node.pins[head] -= 1
        assert p.move_pages([a], [1]).status == [1]
        assert p.read(a, 4) == b"NEW!" and p.read(a + PAGE_SIZE, 4) == b"two!"
        assert m.nodes[0].free_pages == m.nodes[0].nr_pages


class Raiser(Migrator):
    name = "raiser"

    def offload_copy(self, batch):
        raise RuntimeError("DMA engine on fire")


class Partial(Migrator):
    """Copies and marks every other folio, and scribbles nowhere else."""

    name = "partial"

    def offload_copy(self, batch):
        for i in range(0, len(batch), 2):
            n = 1 << int(batch.order[i])
            batch.memory[int(batch.dst_node[i])][batch.dst_pfn[i] : batch.dst_pfn[i] + n] = (
                batch.memory[int(batch.src_node[i])][batch.src_pfn[i] : batch.src_pfn[i] + n]
            )
            batch.copied[i] = True


class Decliner(Recorder):
    name = "decliner"

    def should_batch(self, batch):
        return False


@pytest.mark.parametrize("mig_cls", [Raiser, Partial, Decliner])
@pytest.mark.parametrize("policy", ["offload-only", "static:0.5", "adaptive", "autotune"])
def test_misbehaving_migrators_change_nothing_but_speed(mig_cls, policy):
    mig = mig_cls()
    with Machine(nodes="16M,16M", offload=mig, policy=policy) as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        t = p.mmap(1 << 21, folio_size=1 << 21)
        da, dt = fill(p, a, 64 * PAGE_SIZE, 1), fill(p, t, 1 << 21, 2)
        r = p.move_pages(pages(a, 64 * PAGE_SIZE) + [t], [1] * 65)
        assert r.ret == 0 and r.status == [1] * 65
        assert p.read(a, da.size) == da.tobytes() and p.read(t, dt.size) == dt.tobytes()
        assert m.vmstat["pgmigrate_success"] == 64 + 512
        if mig_cls is Raiser and policy == "offload-only":
            assert mig.folios_failures == 65 and mig.folios_migrated == 0
        if mig_cls is Partial and policy == "offload-only":
            assert mig.folios_migrated == 33 and mig.folios_failures == 32
        if mig_cls is Decliner:
            assert mig.sizes == [] and mig.folios_migrated == 0


def test_registration_rules():
    a, b = Recorder(), Recorder()
    with Machine(nodes="8M,8M") as m:
        assert m.offload.active is None
        m.offload.register(a, reasons="syscall_or_cpuset,compaction")
        assert m.offload.active is a and m.offload.reasons == "compaction,syscall_or_cpuset"
        with pytest.raises(OSError) as e:
            m.offload.register(b)
        assert e.value.errno == errno.EBUSY
        with pytest.raises(OSError) as e:
            m.offload.unregister(b)
        assert e.value.errno == errno.EINVAL
        m.offload.unregister(a)
        assert m.offload.active is None
        with pytest.raises(OSError) as e:
            m.offload.register(object())
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            m.offload.register(b, reasons="syscall,bogus")
        assert e.value.errno == errno.EINVAL and m.offload.active is None


def test_reason_mask_gates_the_migrator():
    rec = Recorder()
    # offload-only: the policy gives the migrator every batch it may take
    with Machine(nodes="8M,8M", policy="offload-only") as m:
        m.offload.register(rec, reasons="compaction")  # move_pages is syscall_or_cpuset
        p = m.spawn()
        a = p.mmap(4 * PAGE_SIZE)
        assert p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4).ret == 0
        assert rec.sizes == []
        m.offload.unregister(rec)
        m.offload.register(rec, reasons=1 << 3)
        assert p.move_pages(pages(a, 4 * PAGE_SIZE), [0] * 4).ret == 0
        assert len(rec.sizes) == 1


@pytest.mark.parametrize(
    "text, mask",
    [
        ("all", 1023),
        ("none", 0),
        ("", 0),
        (5, 5),
        ("0x3", 3),
        ("demotion, damon", (1 << 8) | (1 << 9)),
    ],
)
def test_reason_parsing(text, mask):
    from offload.reasons import format_reasons, parse_reasons

    assert parse_reasons(text) == mask
    assert parse_reasons(format_reasons(mask)) == mask


@pytest.mark.parametrize("bad", ["everything", 1 << 10, -1, 2.0, "compaction,,x"])
def test_bad_reasons(bad):
    from offload.reasons import parse_reasons

    with pytest.raises(OSError) as e:
        parse_reasons(bad)
    assert e.value.errno == errno.EINVAL


def test_unregister_waits_for_inflight_copies():
    import threading
    import time

    started, release = threading.Event(), threading.Event()

    def hook(mig, batch):
        started.set()
        release.wait(5)

    rec = Recorder(hook)
    with machine_with(rec) as m:
        p = m.spawn()
        a = p.mmap(4 * PAGE_SIZE)
        data = fill(p, a, 4 * PAGE_SIZE, 3)
        mover = threading.Thread(target=p.move_pages, args=(pages(a, 4 * PAGE_SIZE), [1] * 4))
        mover.start()
        assert started.wait(5)
        done = threading.Event()
        un = threading.Thread(target=lambda: (m.offload.unregister(rec), done.set()))
        un.start()
        time.sleep(0.1)
        assert not done.is_set()  # still copying
        assert m.offload.active is None  # but no new batch can reach it
        release.set()
        un.join(5)
        mover.join(5)
        assert done.is_set()
        assert p.read(a, data.size) == data.tobytes()


class Exploding(Recorder):
    """A CPU copy path with a bug: raises on its second batch."""

    name = "exploding"

    calls = 0

    def offload_copy(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise MemoryError("boom")
        super().offload_copy(batch)


def test_a_crashing_cpu_backend_cannot_stop_a_migration():
    """A third-party CPU path that raises: the plain page copy completes the batch."""
    cpu = Exploding()
    with Machine(nodes="8M,8M", cpu=cpu, batch_pages=4) as m:
        p = m.spawn()
        a = p.mmap(12 * PAGE_SIZE)
        data = fill(p, a, 12 * PAGE_SIZE, 4)
        free = [n.free_pages for n in m.nodes]
        assert p.move_pages(pages(a, 12 * PAGE_SIZE), [1] * 12).status == [1] * 12
        assert cpu.calls == 3
        assert p.read(a, data.size) == data.tobytes()
        assert sum(n.free_pages for n in m.nodes) == sum(free)
        assert all((n.state == 0).all() for n in m.nodes)


class Unmarking(Recorder):
    """A CPU copy path that copies nothing (leaves every folio to the fallback)."""

    name = "unmarking"

    def offload_copy(self, batch):
        pass


def test_an_error_inside_the_copy_step_leaves_everything_usable(monkeypatch):
    from offload import devmem

    real = devmem.copy_folios
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise MemoryError("boom")
        real(batch)

    with Machine(nodes="8M,8M", cpu=Unmarking(), batch_pages=4) as m:
        p = m.spawn()
        a = p.mmap(12 * PAGE_SIZE)
        data = fill(p, a, 12 * PAGE_SIZE, 4)
        free = [n.free_pages for n in m.nodes]
        monkeypatch.setattr(devmem, "copy_folios", flaky)
        with pytest.raises(MemoryError):
            p.move_pages(pages(a, 12 * PAGE_SIZE), [1] * 12)
        # the first batch moved, the rest stayed; nothing is left isolated or leaked
        st = p.move_pages(pages(a, 12 * PAGE_SIZE), None).status
        assert st == [1] * 4 + [0] * 8
        assert p.read(a, data.size) == data.tobytes()
        assert sum(n.free_pages for n in m.nodes) == sum(free)
        assert all((n.state == 0).all() for n in m.nodes)
        assert p.move_pages(pages(a, 12 * PAGE_SIZE), [1] * 12).ret == 0  # usable again
        assert p.read(a, data.size) == data.tobytes()


@pytest.mark.parametrize("order", [0, 4])
def test_one_batch_to_several_nodes_maps_each_page_where_it_went(order):
    """The engine takes a batch whose folios go to different nodes (no syscall makes one
    today: each gathers one target); every page must map its own copy."""
    from offload.constants import MR_SYSCALL
    from offload.folios import Folios

    size = PAGE_SIZE << order
    with Machine(nodes="16M,16M,16M", batch_pages=4096) as m:
        p = m.spawn()
        a = p.mmap(8 * size, folio_size=size)
        data = fill(p, a, 8 * size, 5)
        _, nid, pfn, _ = p.mm._ptes(*p.mm._translate(np.arange(a, a + 8 * size, size)))
        dst = np.array([1, 2] * 4, dtype=np.int32)
        f = Folios(nid, pfn, np.full(8, order, dtype=np.int8), dst)
        with m.lock:
            assert m.engine.isolate(f)
        assert not m.engine.migrate(f, MR_SYSCALL).rc.any()
        want = np.repeat(dst, 1 << order).tolist()
        assert p.move_pages(pages(a, 8 * size), None).status == want
        assert p.read(a, 8 * size) == data.tobytes()
        assert m.audit() == []
