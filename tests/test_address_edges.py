"""Addresses and lengths at the edges of the address space, for every entry point that
takes them: the kernel's answer (munmap past TASK_SIZE is EINVAL, a pointer at or above
2**63 is -EFAULT in move_pages), a clear error for what no C type holds, and never a
mapping, a byte or a frame lost on the way."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload import PAGE_SIZE, BadArgument, Machine, OffloadError
from offload.constants import TASK_SIZE
from offload.errors import BadRange

EDGE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

U64 = 1 << 64
#: values where widths end or wrap: the top of user space, of int64, of uint64, and past
LIMITS = [
    0,
    1,
    PAGE_SIZE - 1,
    PAGE_SIZE,
    TASK_SIZE - PAGE_SIZE,
    TASK_SIZE,
    TASK_SIZE + 1,
    TASK_SIZE + PAGE_SIZE,
    1 << 47,
    (1 << 62),
    (1 << 63) - PAGE_SIZE,
    (1 << 63) - 1,
    1 << 63,
    (1 << 63) + PAGE_SIZE,
    U64 - PAGE_SIZE,
    U64 - 1,
    U64,
    U64 + PAGE_SIZE,
    1 << 80,
    -1,
    -PAGE_SIZE,
    -(1 << 63),
    -(1 << 63) - 1,
    -(U64),
]


class World:
    """A process with three mappings (private, shared, THP) full of known bytes."""

    def __init__(self) -> None:
        self.m = Machine(nodes="16M,16M")
        self.p = self.m.spawn()
        self.q = self.m.spawn()
        self.maps = [
            (self.p.mmap(8 * PAGE_SIZE), 8 * PAGE_SIZE),
            (self.p.mmap(16 * PAGE_SIZE, shared=True), 16 * PAGE_SIZE),
            (self.p.mmap(2 << 20, folio_size=2 << 20), 2 << 20),
        ]
        rng = np.random.default_rng(5)
        self.data = {}
        for a, n in self.maps:
            d = rng.integers(0, 256, n, dtype=np.uint8)
            self.p.write(a, d)
            self.data[a] = d

    def page_bytes(self) -> dict[int, bytes]:
        """Every mapped page of p, by address, with its bytes (the oracle's view)."""
        out = {}
        for start, length, _shared, _fs in self.p.mappings:
            raw = self.p.read(start, length)
            for off in range(0, length, PAGE_SIZE):
                out[start + off] = raw[off : off + PAGE_SIZE]
        return out

    def close(self) -> None:
        assert self.m.audit() == []
        self.m.close()


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


def near(w: World):
    """Values near the mappings: their starts and ends, a page on either side."""
    out = []
    for a, n in w.maps:
        out += [a, a - PAGE_SIZE, a + n, a + n - PAGE_SIZE, a + n + PAGE_SIZE]
    return out


def addrs(w: World):
    return st.one_of(
        st.sampled_from(LIMITS + near(w)),
        st.integers(-(1 << 70), 1 << 70),
    )


LENGTHS = st.one_of(
    st.sampled_from(LIMITS),
    st.integers(-(1 << 66), 1 << 66),
    st.integers(1, 64).map(lambda k: k * PAGE_SIZE),
)


def munmap_is_einval(addr: int, length: int) -> bool:
    """do_vmi_munmap's checks, with the C types: start and len are unsigned 64-bit."""
    if not -(1 << 63) <= addr < U64 or not -(1 << 63) <= length < U64:
        return True  # no C value: refused (EINVAL) by the model
    start, n = addr % U64, length % U64
    return bool(start % PAGE_SIZE or start > TASK_SIZE or n > TASK_SIZE - start or n == 0)


def test_the_issue_example_unmaps_nothing(world):
    """munmap(a, 1 << 62) once freed every mapping at or above a."""
    w = world
    before = w.page_bytes()
    a = w.maps[0][0]
    with pytest.raises(OSError) as e:
        w.p.munmap(a, 1 << 62)
    assert e.value.errno == errno.EINVAL
    assert isinstance(e.value, BadArgument) and "length" in str(e.value)
    assert w.page_bytes() == before


@EDGE
@given(data=st.data())
def test_munmap_at_the_edges(world, data):
    w = world
    addr = data.draw(addrs(w))
    length = data.draw(LENGTHS)
    before = w.page_bytes()
    free = [n.free_pages for n in w.m.nodes]
    if munmap_is_einval(addr, length):
        with pytest.raises(BadRange) as e:
            w.p.munmap(addr, length)
        assert e.value.errno == errno.EINVAL
        assert w.page_bytes() == before
        assert [n.free_pages for n in w.m.nodes] == free
        return
    w.p.munmap(addr, length)
    end = addr + -(-length // PAGE_SIZE) * PAGE_SIZE
    after = w.page_bytes()
    # exactly the pages of [addr, end) went; every other page kept its bytes
    assert after == {k: v for k, v in before.items() if not addr <= k < end}
    assert w.m.audit() == []


@EDGE
@given(data=st.data())
def test_read_write_pin_share_at_the_edges(world, data):
    w = world
    addr = data.draw(addrs(w))
    length = data.draw(LENGTHS)
    before = w.page_bytes()
    mapped = set(before)
    ok_addr = 0 <= addr < U64

    def covered(a: int, n: int) -> bool:
        first, last = a // PAGE_SIZE, (a + max(n, 1) - 1) // PAGE_SIZE
        return last - first < 4096 and all(k * PAGE_SIZE in mapped for k in range(first, last + 1))

    # read: the bytes, EFAULT for any unmapped byte, a bad argument for what no C type holds
    try:
        got = w.p.read(addr, length)
    except OSError as e:
        assert ok_addr and length > 0 and e.errno == errno.EFAULT
        assert not covered(addr, length)
    except OffloadError:
        assert not ok_addr or length < 0
    else:
        assert ok_addr and length >= 0
        if length:
            assert covered(addr, length)
            first = addr - addr % PAGE_SIZE
            want = b"".join(before[k] for k in range(first, addr + length, PAGE_SIZE))
            assert got == want[addr - first : addr - first + length]
    n = min(max(length, 0), 3 * PAGE_SIZE)
    blob = bytes(range(256)) * (n // 256 + 1)
    try:
        w.p.write(addr, blob[:n])
    except OSError as e:
        assert e.errno == errno.EFAULT and not covered(addr, n)
        assert w.page_bytes() == before
    except OffloadError:
        assert not ok_addr
        assert w.page_bytes() == before
    else:
        assert n == 0 or covered(addr, n)
    mid = w.page_bytes()
    try:
        with w.p.pin(addr):
            pass
    except OSError as e:
        assert e.errno == errno.EFAULT and not covered(addr, 1)
    except OffloadError:
        assert not ok_addr
    assert w.page_bytes() == mid
    theirs = w.q.mappings
    try:
        b = w.p.share(addr, length, into=w.q)
    except (OSError, OffloadError):
        assert w.q.mappings == theirs  # nothing half done
    else:
        s, n = w.maps[1]
        assert ok_addr and s <= addr and addr + length <= s + n
        assert w.q.read(b, length) == w.p.read(addr, length)
        w.q.munmap(b, length)
    assert w.page_bytes() == mid
    assert w.m.audit() == []


@EDGE
@given(data=st.data())
def test_move_pages_entries_at_the_edges(world, data):
    """Every value a 64-bit pointer holds is an entry: outside every mapping it is
    -EFAULT (2**63 and up are the pointers of those bits, as the kernel reads them);
    beyond 64 bits it is a bad argument and nothing moves."""
    w = world
    entries = data.draw(st.lists(addrs(w), min_size=1, max_size=6))
    before = w.page_bytes()
    mapped = set(before)
    fits = all(-(1 << 63) <= e < U64 for e in entries)
    for nodes in (None, [1] * len(entries)):
        try:
            r = w.p.move_pages(entries, nodes)
        except OffloadError:
            assert not fits
            assert w.page_bytes() == before
            continue
        assert fits
        for e, s in zip(entries, r.status):
            page = (e % U64) - (e % U64) % PAGE_SIZE
            if page not in mapped:
                assert s == -errno.EFAULT, (hex(e), s)
            else:
                assert s in (0, 1) if nodes is None else s == 1
    assert w.page_bytes() == before
    # the same bits as an unsigned array give the same statuses
    if fits:
        arr = np.array([e % U64 for e in entries], dtype=np.uint64)
        assert w.p.move_pages(arr, None).status == w.p.move_pages(entries, None).status


def test_mmap_stops_at_the_top_of_the_address_space():
    with Machine(nodes="8M,8M") as m:
        p = m.spawn()
        p.mm._next = TASK_SIZE - 4 * PAGE_SIZE
        a = p.mmap(4 * PAGE_SIZE)
        assert a + 4 * PAGE_SIZE <= TASK_SIZE
        free = m.nodes[0].free_pages
        with pytest.raises(OSError) as e:
            p.mmap(4 * PAGE_SIZE)
        assert e.value.errno == errno.ENOMEM
        assert m.nodes[0].free_pages == free  # nothing allocated for the refused one
        assert m.audit() == []
