"""The memory model: nodes, mmap, read/write, the zero page, share, munmap, pin."""

import errno

import numpy as np
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, BadArgument, BadArgumentType, Machine, OffloadError, SpecError


def test_node_spec_parsing():
    with Machine(nodes="8M, dram:4M,1024K") as m:
        assert [n.id for n in m.nodes] == [0, 1, 2]
        assert [n.kind for n in m.nodes] == ["dram"] * 3
        assert [n.nr_pages for n in m.nodes] == [2048, 1024, 256]
        assert all(n.free_pages == n.nr_pages for n in m.nodes)


@pytest.mark.parametrize("spec", ["", "8M,", "0", "5000", "8Q", "hbm:8M", "-4M", "8M,,8M"])
def test_bad_node_specs_name_the_argument(spec):
    with pytest.raises(SpecError, match="nodes"):
        Machine(nodes=spec)


def test_device_node_without_gpu_is_a_clear_error():
    with pytest.raises(OffloadError, match="device"):
        Machine(nodes="dram:8M,device:8M")


def test_bad_machine_arguments():
    with pytest.raises(SpecError, match="policy"):
        Machine(nodes="8M", policy="fastest")
    with pytest.raises(OffloadError, match="unknown backend"):
        Machine(nodes="8M", cpu="cpu-turbo")
    with pytest.raises(BadArgument, match="batch_pages"):
        Machine(nodes="8M", batch_pages=0)
    with pytest.raises(BadArgumentType, match="nodes"):
        Machine(nodes=8 << 20)


def test_populate_allocates_and_zeroes(m1):
    p = m1.spawn()
    free = m1.nodes[1].free_pages
    a = p.mmap(1 << 21, node=1, folio_size=1 << 21)
    assert m1.nodes[1].free_pages == free - 512
    assert p.read(a, 1 << 21) == bytes(1 << 21)
    assert p.move_pages([a], None).status == [1]


def test_write_read_across_folios_and_mappings_boundaries(m1):
    p = m1.spawn()
    a = p.mmap(8 * PAGE_SIZE, folio_size=2 * PAGE_SIZE)
    data = fill(p, a + 100, 5 * PAGE_SIZE + 17, seed=1)
    assert p.read(a + 100, data.size) == data.tobytes()
    assert p.read(a, 100) == bytes(100)
    p.write(a + 3, np.array([7, 8], dtype=np.uint8))
    assert p.read(a + 2, 4) == b"\x00\x07\x08\x00"


def test_first_touch_and_the_zero_page(m1):
    p = m1.spawn()
    free = m1.nodes[0].free_pages
    a = p.mmap(4 * PAGE_SIZE, populate=False)
    assert m1.nodes[0].free_pages == free
    assert p.move_pages(pages_of(a, 4), None).status == [-errno.ENOENT] * 4
    assert p.read(a + PAGE_SIZE, 10) == bytes(10)  # maps the zero page
    p.write(a + 2 * PAGE_SIZE, b"x")
    assert m1.nodes[0].free_pages == free - 1
    st = p.move_pages(pages_of(a, 4), None).status
    assert st == [-errno.ENOENT, -errno.EFAULT, 0, -errno.ENOENT]
    p.write(a + PAGE_SIZE, b"y")  # a write to the zero page allocates
    assert p.move_pages([a + PAGE_SIZE], None).status == [0]


def test_first_touch_of_large_folio_allocates_whole_folio(m1):
    p = m1.spawn()
    a = p.mmap(1 << 21, folio_size=1 << 21, populate=False)
    free = m1.nodes[0].free_pages
    p.write(a + 5000, b"z")
    assert m1.nodes[0].free_pages == free - 512
    r = p.move_pages([a], [1])
    assert r.status == [1] and m1.vmstat["thp_migration_success"] == 1


def test_populate_without_room_is_enomem_and_allocates_nothing(m1):
    p = m1.spawn()
    free = m1.nodes[0].free_pages
    with pytest.raises(OSError) as e:
        p.mmap(32 << 20, node=0)
    assert e.value.errno == errno.ENOMEM
    assert m1.nodes[0].free_pages == free and p.mappings == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(length=0), "length"),
        (dict(length=-4096), "length"),
        (dict(length=4097), "length"),
        (dict(length=8192, folio_size=3 * 4096), "folio_size"),
        (dict(length=4 << 20, folio_size=4 << 20), "folio_size"),
        (dict(length=8192, folio_size=1024), "folio_size"),
        (dict(length=8192, node=2), "node"),
        (dict(length=8192, node=-1), "node"),
        (dict(length=4096 * 3, folio_size=8192), "length"),
    ],
)
def test_bad_mmap_arguments(m1, kwargs, name):
    p = m1.spawn()
    free = [n.free_pages for n in m1.nodes]
    with pytest.raises((BadArgument, BadArgumentType), match=name):
        p.mmap(**kwargs)
    assert [n.free_pages for n in m1.nodes] == free and p.mappings == []


def test_wrong_types(m1):
    p = m1.spawn()
    a = p.mmap(PAGE_SIZE)
    with pytest.raises(BadArgumentType, match="length"):
        p.mmap("4096")
    with pytest.raises(BadArgumentType, match="data"):
        p.write(a, "text")
    with pytest.raises(BadArgumentType, match="addr"):
        p.read(float(a), 1)
    with pytest.raises(BadArgument, match="n"):
        p.read(a, -1)


def test_access_outside_mappings_is_efault(m1):
    p = m1.spawn()
    a = p.mmap(2 * PAGE_SIZE)
    for call in (
        lambda: p.read(a + 2 * PAGE_SIZE, 1),
        lambda: p.write(a - 1, b"ab"),
        lambda: p.read(a + PAGE_SIZE, PAGE_SIZE + 1),
        lambda: p.pin(a + 3 * PAGE_SIZE),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EFAULT
    assert p.read(a, 2) == b"\0\0"


def test_munmap_frees_and_faults(m1):
    p = m1.spawn()
    free = m1.nodes[0].free_pages
    a = p.mmap(4 * PAGE_SIZE)
    fill(p, a, 4 * PAGE_SIZE, 2)
    p.munmap(a + PAGE_SIZE, 2 * PAGE_SIZE)
    assert m1.nodes[0].free_pages == free - 2
    with pytest.raises(OSError):
        p.read(a + PAGE_SIZE, 1)
    assert p.move_pages([a, a + PAGE_SIZE, a + 3 * PAGE_SIZE], None).status == [0, -errno.EFAULT, 0]
    p.munmap(a, 4 * PAGE_SIZE)
    assert m1.nodes[0].free_pages == free and p.mappings == []


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_munmap_of_part_of_a_thp_defers_its_split(kernel):
    """The folio stays whole (the kernel's deferred split). Up to 6.9 it migrates
    whole; from 6.10 the migration splits it and only the mapped half moves."""
    m1 = Machine(nodes="16M,16M", kernel=kernel)
    p = m1.spawn()
    free = m1.nodes[0].free_pages
    a = p.mmap(1 << 21, folio_size=1 << 21)
    data = fill(p, a, 1 << 21, 3)
    p.munmap(a, 1 << 20)
    assert m1.nodes[0].free_pages == free - 512
    assert p.read(a + (1 << 20), 1 << 20) == data[1 << 20 :].tobytes()
    assert p.move_pages([a + (1 << 20)], [1]).status == [1]
    if m1.kernel.split_partly_mapped_thp:
        assert m1.vmstat["thp_migration_split"] == 1 and m1.vmstat["thp_migration_fail"] == 1
        assert m1.nodes[1].nr_pages - m1.nodes[1].free_pages == 256  # only what is mapped
    else:
        assert m1.vmstat["thp_migration_success"] == 1
    assert p.move_pages(pages(a + (1 << 20), 1 << 20), None).status == [1] * 256
    assert p.read(a + (1 << 20), 1 << 20) == data[1 << 20 :].tobytes()
    p.munmap(a + (1 << 20), 1 << 20)
    assert all(n.free_pages == n.nr_pages for n in m1.nodes)
    assert m1.audit() == []
    m1.close()


def test_share_maps_the_same_memory(m1):
    p, q = m1.spawn(uid=1), m1.spawn(uid=1)
    a = p.mmap(4 * PAGE_SIZE, shared=True)
    b = p.share(a + PAGE_SIZE, 2 * PAGE_SIZE, into=q)
    q.write(b, b"from q")
    assert p.read(a + PAGE_SIZE, 6) == b"from q"
    q.munmap(b, 2 * PAGE_SIZE)
    assert p.read(a + PAGE_SIZE, 6) == b"from q"
    priv = p.mmap(PAGE_SIZE)
    with pytest.raises(OSError) as e:
        p.share(priv, PAGE_SIZE, into=q)
    assert e.value.errno == errno.EINVAL


def test_pin_keeps_a_folio_until_released(m1):
    p = m1.spawn()
    a = p.mmap(PAGE_SIZE)
    free = m1.nodes[0].free_pages
    with p.pin(a):
        p.munmap(a, PAGE_SIZE)
        assert m1.nodes[0].free_pages == free  # still referenced
    assert m1.nodes[0].free_pages == free + 1


def pages_of(a, n):
    return [a + i * PAGE_SIZE for i in range(n)]


def test_the_address_index_follows_mmap_and_munmap():
    """Appends, splits in the middle, removals: the index always matches the mappings."""
    rng = np.random.default_rng(4)
    with Machine(nodes="64M") as m:
        p = m.spawn()
        live = []
        for step in range(400):
            if live and rng.random() < 0.4:
                a, n = live.pop(int(rng.integers(len(live))))
                k = int(rng.integers(n))  # unmap one page: splits the mapping in two
                p.munmap(a + k * PAGE_SIZE, PAGE_SIZE)
                if k:
                    live.append((a, k))
                if k + 1 < n:
                    live.append((a + (k + 1) * PAGE_SIZE, n - k - 1))
            else:
                n = int(rng.integers(1, 5))
                a = p.mmap(n * PAGE_SIZE, populate=False)
                p.write(a, bytes([step % 251 + 1]))
                live.append((a, n))
            vmas = p.mm._vmas
            assert [v.start for v in vmas] == sorted(v.start for v in vmas)
            assert p.mm._starts.tolist() == [v.start for v in vmas]
            assert p.mm._ends.tolist() == [v.end for v in vmas]
            assert p.mm._pgoffs.tolist() == [v.pgoff for v in vmas]
        for a, n in live:
            assert p.move_pages([a + i * PAGE_SIZE for i in range(n)], None).status[0] in (0, -2)


@pytest.mark.parametrize("order", [0, 2, 3, 4, 9])
def test_fill_folios_sets_every_page_of_each_folio_and_nothing_else(order):
    from offload.node import fill_folios, pages_of

    span = 1 << order
    a = np.full(5 * span + 3, 7, dtype=np.int8)  # not a whole number of folios long
    heads = np.array([4 * span, span], dtype=np.int64)
    fill_folios(a, heads, order, -1)
    want = np.full(a.size, 7, dtype=np.int8)
    want[pages_of(heads, order)] = -1
    assert np.array_equal(a, want)
