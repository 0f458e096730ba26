"""migrate_pages(2): relative node mapping, privileges, shared pages, return value."""

import errno

import pytest
from conftest import fill, make_machine, pages

from offload import PAGE_SIZE


@pytest.fixture
def m3(backend):
    m = make_machine(backend, nodes="8M,8M,8M,8M")
    yield m
    m.close()


def where(p, a, n):
    return p.move_pages(pages(a, n * PAGE_SIZE), None).status


def test_moves_everything_and_keeps_bytes(m3):
    p = m3.spawn()
    a = p.mmap(8 * PAGE_SIZE, node=0)
    b = p.mmap(1 << 21, node=0, folio_size=1 << 21)
    c = p.mmap(4 * PAGE_SIZE, node=2)
    da, db = fill(p, a, 8 * PAGE_SIZE, 1), fill(p, b, 1 << 21, 2)
    assert p.migrate_pages([0], [1]) == 0
    assert where(p, a, 8) == [1] * 8 and where(p, b, 512) == [1] * 512
    assert where(p, c, 4) == [2] * 4
    assert p.read(a, da.size) == da.tobytes() and p.read(b, db.size) == db.tobytes()
    assert m3.vmstat["pgmigrate_success"] == 8 + 512


def test_relative_mapping(m3):
    p = m3.spawn()
    a = p.mmap(PAGE_SIZE, node=0)
    b = p.mmap(PAGE_SIZE, node=1)
    assert p.migrate_pages([0, 1], [2, 3]) == 0
    assert where(p, a, 1) == [2] and where(p, b, 1) == [3]


def test_shift_by_one_moves_each_page_once(m3):
    p = m3.spawn()
    a = [p.mmap(PAGE_SIZE, node=n) for n in (0, 1, 2)]
    for i, x in enumerate(a):
        p.write(x, bytes([i + 1]) * 8)
    assert p.migrate_pages([0, 1, 2], [1, 2, 3]) == 0
    assert [where(p, x, 1)[0] for x in a] == [1, 2, 3]
    assert m3.vmstat["pgmigrate_success"] == 3
    assert [p.read(x, 1) for x in a] == [b"\x01", b"\x02", b"\x03"]


def test_node_lists_are_sets_so_a_swap_is_a_no_op(m3):
    # the syscall takes node masks: {0, 1} -> {1, 0} is the same set, nothing moves
    p = m3.spawn()
    a, b = p.mmap(PAGE_SIZE, node=0), p.mmap(PAGE_SIZE, node=1)
    assert p.migrate_pages([0, 1], [1, 0]) == 0
    assert where(p, a, 1) == [0] and where(p, b, 1) == [1]


def test_moves_are_ordered_so_no_page_moves_twice(m3):
    # {0, 1} -> {1, 2}: 1->2 must go first, else node 0's pages would end on 2
    p = m3.spawn()
    a, b = p.mmap(PAGE_SIZE, node=0), p.mmap(PAGE_SIZE, node=1)
    assert p.migrate_pages([0, 1], [1, 2]) == 0
    assert where(p, a, 1) == [1] and where(p, b, 1) == [2]
    assert m3.vmstat["pgmigrate_success"] == 2


def test_fewer_new_nodes_wrap(m3):
    p = m3.spawn()
    a, b, c = (p.mmap(PAGE_SIZE, node=n) for n in (0, 1, 2))
    assert p.migrate_pages([0, 1, 2], [3]) == 0
    assert [where(p, x, 1)[0] for x in (a, b, c)] == [3, 3, 3]


def test_same_sets_do_nothing(m3):
    p = m3.spawn()
    p.mmap(PAGE_SIZE, node=0)
    assert p.migrate_pages([0], [0]) == 0
    assert m3.vmstat["pgmigrate_success"] == 0


def test_pinned_pages_are_counted(m3):
    p = m3.spawn()
    a = p.mmap(4 * PAGE_SIZE, node=0)
    with p.pin(a):
        assert p.migrate_pages([0], [1]) == 1
    assert where(p, a, 4) == [0, 1, 1, 1]


def test_shared_pages_need_privilege_and_are_skipped_silently(m3):
    p, q = m3.spawn(uid=10), m3.spawn(uid=10)
    a = p.mmap(2 * PAGE_SIZE, shared=True)
    q.read(p.share(a, PAGE_SIZE, into=q), 1)  # q touches its page: two mappings now
    assert p.migrate_pages([0], [1]) == 0
    assert where(p, a, 2) == [0, 1]
    root = m3.spawn(uid=0)
    assert root.migrate_pages([0], [2], pid=p.pid) == 0
    assert where(p, a, 2) == [2, 1]


def test_new_nodes_without_memory(m3):
    """kernel_migrate_pages: EPERM without CAP_SYS_NICE, else new &= nodes with memory."""
    nice = m3.spawn(uid=10, cap_sys_nice=True)
    a = nice.mmap(PAGE_SIZE, node=0)
    nodes = len(m3.nodes)
    assert nice.migrate_pages([0], [1, nodes]) == 0  # moves to node 1, the only one left
    assert where(nice, a, 1) == [1]
    with pytest.raises(OSError) as e:
        nice.migrate_pages([1], [nodes])
    assert e.value.errno == errno.EINVAL  # nothing left after the intersection
    user = m3.spawn(uid=11)
    with pytest.raises(OSError) as e:
        user.migrate_pages([0], [1, nodes])
    assert e.value.errno == errno.EPERM


def test_errors(m3):
    p = m3.spawn(uid=10)
    other = m3.spawn(uid=11)
    other.mmap(PAGE_SIZE)

    def err(*args, **kw):
        with pytest.raises(OSError) as e:
            p.migrate_pages(*args, **kw)
        return e.value.errno

    assert err([0], [1], pid=12345) == errno.ESRCH
    assert err([0], [1], pid=other.pid) == errno.EPERM
    assert err([0], [9]) == errno.EPERM  # not a node with memory, no CAP_SYS_NICE
    assert err([0], []) == errno.EINVAL
    assert err([-1], [1]) == errno.EINVAL
    assert err([0], [5000]) == errno.EINVAL
    with pytest.raises(TypeError, match="old_nodes"):
        p.migrate_pages("0", [1])
    assert other.move_pages([other.mappings[0][0]], None).status == [0]
