"""move_pages(2) semantics, run over every backend: errors, statuses, counters, bytes."""

import errno

import numpy as np
import pytest
from conftest import fill, make_machine, pages

from offload import MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT, PAGE_SIZE, BadArgument

THP = 1 << 21


def test_move_and_query(machine):
    p = machine.spawn()
    a = p.mmap(16 * PAGE_SIZE)
    data = fill(p, a, 16 * PAGE_SIZE, 1)
    r = p.move_pages(pages(a, 16 * PAGE_SIZE), [1] * 16)
    assert r.ret == 0 and r.status == [1] * 16
    assert p.move_pages(pages(a, 16 * PAGE_SIZE), None).status == [1] * 16
    assert p.read(a, data.size) == data.tobytes()
    assert machine.vmstat["pgmigrate_success"] == 16
    assert machine.nodes[0].free_pages == machine.nodes[0].nr_pages


def test_unaligned_addresses_name_their_page(machine):
    p = machine.spawn()
    a = p.mmap(2 * PAGE_SIZE)
    fill(p, a, 2 * PAGE_SIZE, 2)
    r = p.move_pages([a + 5, a + PAGE_SIZE + 4095], [1, 1])
    assert r.status == [1, 1] and r.ret == 0


def test_already_on_target_is_success_and_not_counted(machine):
    p = machine.spawn()
    a = p.mmap(2 * PAGE_SIZE, node=1)
    r = p.move_pages(pages(a, 2 * PAGE_SIZE), [1, 1])
    assert r == type(r)(0, [1, 1])
    assert machine.vmstat["pgmigrate_success"] == 0


def test_per_entry_errors(machine):
    p = machine.spawn()
    a = p.mmap(3 * PAGE_SIZE, populate=False)
    p.write(a, b"x")
    p.read(a + PAGE_SIZE, 1)  # zero page
    unmapped = a + 64 * PAGE_SIZE
    r = p.move_pages([a, a + PAGE_SIZE, a + 2 * PAGE_SIZE, unmapped, -5], [1] * 5)
    assert r.status == [1, -errno.EFAULT, -errno.ENOENT, -errno.EFAULT, -errno.EFAULT]
    assert r.ret == 4


@pytest.mark.parametrize(
    "flags", [MPOL_MF_STRICT, MPOL_MF_MOVE | MPOL_MF_STRICT, 8, 1 << 20, MPOL_MF_MOVE | 16]
)
def test_unknown_flags_are_einval_before_anything(machine, flags):
    p = machine.spawn(uid=0)
    a = p.mmap(PAGE_SIZE)
    with pytest.raises(OSError) as e:
        p.move_pages([a], [1], flags=flags, pid=999)  # EINVAL wins over ESRCH
    assert e.value.errno == errno.EINVAL
    assert p.move_pages([a], None).status == [0]


def test_errno_order_and_nothing_moved(machine):
    p = machine.spawn(uid=1000)
    other = machine.spawn(uid=2000)
    a = p.mmap(PAGE_SIZE)
    b = other.mmap(PAGE_SIZE)

    def err(*args, **kw):
        with pytest.raises(OSError) as e:
            p.move_pages(*args, **kw)
        return e.value.errno

    assert err([a], [1], flags=MPOL_MF_MOVE_ALL, pid=999) == errno.EPERM  # before ESRCH
    assert err([a], [1], pid=999) == errno.ESRCH
    assert err([b], [1], pid=other.pid) == errno.EPERM
    assert err([b], [7], pid=other.pid) == errno.EPERM  # before ENODEV
    assert err([a], [-1]) == errno.ENODEV
    assert err([a], [2]) == errno.ENODEV
    assert p.move_pages([a], None).status == [0]
    assert other.move_pages([b], None).status == [0]
    assert machine.vmstat["pgmigrate_success"] == 0


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_bad_node_stops_the_walk_after_the_entries_before_it(machine, where):
    """do_pages_move: the group gathered before the bad node is migrated, then ENODEV."""
    p = machine.spawn()
    a = p.mmap(3 * PAGE_SIZE)
    data = fill(p, a, 3 * PAGE_SIZE, 11)
    nodes = {"first": [2, 1, 1], "middle": [1, 2, 1], "last": [1, 1, 2]}[where]
    with pytest.raises(OSError) as e:
        p.move_pages(pages(a, 3 * PAGE_SIZE), nodes)
    assert e.value.errno == errno.ENODEV
    bad = nodes.index(2)
    assert e.value.status == [1] * bad + [None] * (3 - bad)
    assert p.move_pages(pages(a, 3 * PAGE_SIZE), None).status == [1] * bad + [0] * (3 - bad)
    assert machine.vmstat["pgmigrate_success"] == bad
    assert p.read(a, data.size) == data.tobytes()


def test_the_same_page_to_two_nodes_moves_twice(machine):
    """[A, A] to [1, 0]: two groups, two migrations, as the kernel's walk does."""
    p = machine.spawn()
    a = p.mmap(PAGE_SIZE)
    data = fill(p, a, PAGE_SIZE, 12)
    r = p.move_pages([a, a], [1, 0])
    assert r.status == [1, 0] and r.ret == 0
    assert p.move_pages([a], None).status == [0]
    assert machine.vmstat["pgmigrate_success"] == 2
    assert p.read(a, data.size) == data.tobytes()


def test_acting_on_another_process_needs_ptrace_access(machine):
    """ptrace_may_access: the same uid or CAP_SYS_PTRACE; CAP_SYS_NICE is not enough."""
    root = machine.spawn(uid=0)
    nice = machine.spawn(uid=5, cap_sys_nice=True)
    tracer = machine.spawn(uid=6, cap_sys_ptrace=True)
    q = machine.spawn(uid=1000)
    a = q.mmap(2 * PAGE_SIZE)
    data = fill(q, a, 2 * PAGE_SIZE, 3)
    assert root.move_pages([a], [1], pid=q.pid).status == [1]
    with pytest.raises(PermissionError):
        nice.move_pages([a + PAGE_SIZE], [1], pid=q.pid, flags=MPOL_MF_MOVE_ALL)
    with pytest.raises(PermissionError):
        nice.migrate_pages([0], [1], pid=q.pid)
    assert tracer.move_pages([a + PAGE_SIZE], [1], pid=q.pid).status == [1]
    with pytest.raises(PermissionError):  # MOVE_ALL still needs CAP_SYS_NICE
        tracer.move_pages([a], [0], pid=q.pid, flags=MPOL_MF_MOVE_ALL)
    same = machine.spawn(uid=1000)
    assert same.move_pages([a], [0], pid=q.pid).status == [0]
    assert q.read(a, data.size) == data.tobytes()


def test_shared_pages_need_move_all(machine):
    p = machine.spawn(uid=0)
    q = machine.spawn(uid=0)
    a = p.mmap(2 * PAGE_SIZE, shared=True)
    data = fill(p, a, 2 * PAGE_SIZE, 4)
    b = p.share(a, PAGE_SIZE, into=q)
    assert p.move_pages([a], None).status == [0]
    q.read(b, 1)  # q's page table entry: the page is mapped twice now
    r = p.move_pages([a, a + PAGE_SIZE], [1, 1])
    assert r.status == [-errno.EACCES, 1] and r.ret == 1
    r = p.move_pages([a], [1], flags=MPOL_MF_MOVE_ALL)
    assert r.status == [1]
    assert q.move_pages([b], None).status == [1]  # the other process sees the move
    assert q.read(b, PAGE_SIZE) == data[:PAGE_SIZE].tobytes()
    unpriv = machine.spawn(uid=7)
    with pytest.raises(OSError) as e:
        unpriv.move_pages([a], [0], flags=MPOL_MF_MOVE_ALL)
    assert e.value.errno == errno.EPERM


def test_shared_mapping_in_one_process_moves_without_move_all(machine):
    p = machine.spawn()
    a = p.mmap(PAGE_SIZE, shared=True)
    assert p.move_pages([a], [1]).status == [1]


@pytest.mark.parametrize("folio_size", [2 * PAGE_SIZE, 16 * PAGE_SIZE, 64 * PAGE_SIZE, THP])
def test_large_folios_move_whole(machine, folio_size):
    p = machine.spawn()
    a = p.mmap(2 * folio_size, folio_size=folio_size)
    data = fill(p, a, 2 * folio_size, 5)
    entries = [a + folio_size - PAGE_SIZE, a + folio_size, a + folio_size + 3 * PAGE_SIZE // 2]
    r = p.move_pages(entries, [1, 1, 1])
    assert r.ret == 0 and r.status == [1, 1, 1]
    # every page of both folios moved, each folio once
    assert p.move_pages(pages(a, 2 * folio_size), None).status == [1] * (
        2 * folio_size // PAGE_SIZE
    )
    assert machine.vmstat["pgmigrate_success"] == 2 * folio_size // PAGE_SIZE
    assert machine.vmstat["thp_migration_success"] == (2 if folio_size == THP else 0)
    assert p.read(a, data.size) == data.tobytes()


def test_entries_into_one_folio_with_different_targets_move_it_each_time(machine):
    with make_machine("cpu-serial", nodes="8M,8M,8M") as m:
        p = m.spawn()
        a = p.mmap(4 * PAGE_SIZE, folio_size=4 * PAGE_SIZE)
        r = p.move_pages([a, a + PAGE_SIZE], [1, 2])
        assert r.status == [1, 2] and r.ret == 0
        assert p.move_pages([a], None).status == [2]
        assert m.vmstat["pgmigrate_success"] == 8


def test_pinned_page_is_ebusy_after_retries_and_intact(machine):
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    data = fill(p, a, 4 * PAGE_SIZE, 6)
    with p.pin(a + PAGE_SIZE):
        r = p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4)
    assert r.status == [1, -errno.EBUSY, 1, 1] and r.ret == 1
    assert machine.vmstat["pgmigrate_fail"] == 1 and machine.vmstat["pgmigrate_success"] == 3
    assert p.read(a, data.size) == data.tobytes()
    assert p.move_pages([a + PAGE_SIZE], [1]).status == [1]


def test_pinned_thp_counts_thp_fail(machine):
    p = machine.spawn()
    a = p.mmap(THP, folio_size=THP)
    with p.pin(a + 12345):
        assert p.move_pages([a], [1]).status == [-errno.EBUSY]
    assert machine.vmstat["thp_migration_fail"] == 1
    assert machine.vmstat["pgmigrate_fail"] == 512


def test_enomem_when_target_is_full(machine):
    with make_machine(
        machine.scheduler.control.active.spec if machine.offload.active else "cpu-serial",
        nodes="8M,64K",
    ) as m:
        p = m.spawn()
        a = p.mmap(32 * PAGE_SIZE)
        data = fill(p, a, 32 * PAGE_SIZE, 7)
        r = p.move_pages(pages(a, 32 * PAGE_SIZE), [1] * 32)
        assert r.status == [1] * 16 + [-errno.ENOMEM] * 16 and r.ret == 16
        assert m.vmstat["pgmigrate_fail"] == 16
        assert p.read(a, data.size) == data.tobytes()


def test_thp_split_on_fragmented_target(machine):
    with make_machine("cpu-serial", nodes="8M,4M") as m:
        p = m.spawn()
        # fragment node 1: every other page used, so no 2M block (nor any pair) is free
        holes = p.mmap(1024 * PAGE_SIZE, node=1)
        keep = [holes + i * PAGE_SIZE for i in range(1, 1024, 2)]
        for i in range(0, 1024, 2):
            p.munmap(holes + i * PAGE_SIZE, PAGE_SIZE)
        assert m.nodes[1].buddy.largest_free_order() == 0
        a = p.mmap(THP, folio_size=THP)
        data = fill(p, a, THP, 8)
        r = p.move_pages([a, a + THP - 1], [1, 1])
        assert r.status == [1, 1] and r.ret == 0
        assert m.vmstat["thp_migration_split"] == 1
        # migrate_pages_batch counts a THP split on -ENOMEM as failed too; its pages
        # moved as pieces, so no base page failed
        assert m.vmstat["thp_migration_fail"] == 1 and m.vmstat["pgmigrate_fail"] == 0
        assert m.vmstat["thp_migration_success"] == 0
        assert m.vmstat["pgmigrate_success"] == 512
        assert p.read(a, THP) == data.tobytes()
        assert p.move_pages(keep[:3], None).status == [1, 1, 1]


def test_split_pieces_that_still_do_not_fit_fail_enomem(machine):
    with make_machine("cpu-serial", nodes="8M,1M") as m:
        p = m.spawn()
        a = p.mmap(THP, folio_size=THP)
        data = fill(p, a, THP, 9)
        r = p.move_pages(pages(a, THP), [1] * 512)
        assert r.status.count(1) == 256 and r.status.count(-errno.ENOMEM) == 256
        assert m.vmstat["thp_migration_split"] == 1 and m.vmstat["thp_migration_fail"] == 1
        assert m.vmstat["pgmigrate_success"] == 256 and m.vmstat["pgmigrate_fail"] == 256
        assert p.read(a, THP) == data.tobytes()


def test_bad_arguments(machine):
    p = machine.spawn()
    a = p.mmap(PAGE_SIZE)
    with pytest.raises(BadArgument, match="nodes"):
        p.move_pages([a, a], [1])
    with pytest.raises(TypeError, match="pages"):
        p.move_pages("abc", [1])
    with pytest.raises(TypeError, match="pages"):
        p.move_pages([1.5], [1])
    with pytest.raises(TypeError, match="flags"):
        p.move_pages([a], [1], flags=None)
    assert p.move_pages([], []).ret == 0
    assert p.move_pages(np.array([a]), np.array([1])).status == [1]


def test_results_unpack_like_tuples(machine):
    from offload import registry

    p = machine.spawn()
    a = p.mmap(PAGE_SIZE)
    ret, status = p.move_pages([a], [1])
    assert (ret, status) == (0, [1])
    name, ok, reason = registry.available()["cpu-serial"]
    assert (name, ok, reason) == ("cpu-serial", True, "")


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_a_read_of_an_untouched_thp_slot_maps_the_huge_zero_page(backend, layout, kernel):
    """The whole 2 MiB slot queries -EFAULT, not only the page read. A write then faults
    one 4K page (the huge zero PMD is split) up to 6.12, a whole THP on 7.x (switch
    huge_zero_write_thp)."""
    with make_machine(backend, layout=layout, seed=7, kernel=kernel) as machine:
        p = machine.spawn()
        a = p.mmap(2 * THP, folio_size=THP, populate=False)
        assert p.read(a + 7 * PAGE_SIZE, 3) == b"\0\0\0"
        st = p.move_pages([a, a + 511 * PAGE_SIZE, a + THP], None).status
        untouched = -errno.ENOENT if machine.kernel.untouched_enoent else -errno.EFAULT
        assert st == [-errno.EFAULT, -errno.EFAULT, untouched]
        p.write(a + 3 * PAGE_SIZE, b"x")
        r = p.move_pages([a, a + 3 * PAGE_SIZE], [1, 1])
        if machine.kernel.huge_zero_write_thp:
            assert r.status == [1, 1]
            assert p.move_pages(pages(a, THP), None).status == [1] * 512
            assert machine.vmstat["thp_migration_success"] == 1
        else:
            assert r.status == [-errno.EFAULT, 1]
            assert machine.vmstat["pgmigrate_success"] == 1
            assert machine.vmstat["thp_migration_success"] == 0
        assert p.read(a + 3 * PAGE_SIZE, 1) == b"x"
        assert p.read(a, 3) == b"\0\0\0"
        assert machine.audit() == []


def test_a_share_never_touched_does_not_count(machine):
    """A page counts towards the mapcount once a process has a page table entry for it."""
    p, q = machine.spawn(), machine.spawn()
    a = p.mmap(2 * PAGE_SIZE, shared=True)
    data = fill(p, a, 2 * PAGE_SIZE, 14)
    b = p.share(a, 2 * PAGE_SIZE, into=q)
    assert q.move_pages(pages(b, 2 * PAGE_SIZE), None).status == [-errno.ENOENT] * 2
    assert p.move_pages(pages(a, 2 * PAGE_SIZE), [1, 1]).status == [1, 1]
    q.write(b + PAGE_SIZE, b"q")
    assert q.move_pages(pages(b, 2 * PAGE_SIZE), None).status == [-errno.ENOENT, 1]
    r = p.move_pages(pages(a, 2 * PAGE_SIZE), [0, 0])
    assert r.status == [0, -errno.EACCES]
    assert q.read(b, 1) == data[:1].tobytes() and p.read(a + PAGE_SIZE, 1) == b"q"


def test_fork_shares_private_pages_copy_on_write(machine):
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    data = fill(p, a, 4 * PAGE_SIZE, 15)
    c = p.fork()
    assert c.pid != p.pid and c.uid == p.uid
    assert c.read(a, data.size) == data.tobytes()
    r = p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4)
    assert r.status == [-errno.EACCES] * 4
    c.write(a, b"child")  # breaks the sharing of page 0 only
    p.write(a + PAGE_SIZE, b"parent")  # and of page 1, from the other side
    r = p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4)
    assert r.status == [1, 1, -errno.EACCES, -errno.EACCES]
    assert p.read(a, 5) == data[:5].tobytes() and c.read(a, 5) == b"child"
    assert c.read(a + PAGE_SIZE, 6) == data[PAGE_SIZE : PAGE_SIZE + 6].tobytes()
    assert p.read(a + PAGE_SIZE, 6) == b"parent"
    # MOVE_ALL moves the still-shared pages for both processes
    root = machine.spawn(uid=0)
    r = root.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4, flags=MPOL_MF_MOVE_ALL, pid=c.pid)
    assert r.status == [1] * 4
    assert p.move_pages(pages(a, 4 * PAGE_SIZE), None).status == [1] * 4
    assert c.read(a + 2 * PAGE_SIZE, 2 * PAGE_SIZE) == data[2 * PAGE_SIZE :].tobytes()
    # unmapping in one process leaves the other's pages alone; then nothing leaks
    p.munmap(a, 4 * PAGE_SIZE)
    assert c.read(a + 2 * PAGE_SIZE, 2 * PAGE_SIZE) == data[2 * PAGE_SIZE :].tobytes()
    c.munmap(a, 4 * PAGE_SIZE)
    assert all(n.free_pages == n.nr_pages for n in machine.nodes)


@pytest.mark.parametrize("entries", [1, 3])
def test_a_page_mapped_twice_in_one_process_moves_once(entries):
    # MPOL_MF_MOVE_ALL lets a page mapped more than once through: two mappings of one
    # shared region in the same process name the same folios at increasing addresses
    from offload import Machine

    m = Machine(nodes="dram:16M,dram:16M")
    p = m.spawn(uid=0)
    a = p.mmap(4 * PAGE_SIZE, shared=True)
    data = bytes(range(256)) * 16 * 4
    p.write(a, data)
    b = p.share(a, 4 * PAGE_SIZE, into=p)
    assert p.read(b, 4 * PAGE_SIZE) == data  # faults the second mapping in
    free = [n.free_pages for n in m.nodes]
    addrs = [a + i * PAGE_SIZE for i in range(entries)] + [
        b + i * PAGE_SIZE for i in range(entries)
    ]
    r = p.move_pages(addrs, [1] * len(addrs), flags=MPOL_MF_MOVE_ALL)
    assert r.ret == 0 and r.status == [1] * len(addrs)
    assert [n.free_pages for n in m.nodes] == [free[0] + entries, free[1] - entries]
    assert p.read(a, 4 * PAGE_SIZE) == data and p.read(b, 4 * PAGE_SIZE) == data
    assert m.audit() == []


def test_audit_sees_a_frame_freed_twice():
    from offload import Machine

    m = Machine(nodes="dram:16M")
    p = m.spawn()
    a = p.mmap(2 * PAGE_SIZE)
    p.write(a, b"x" * 2 * PAGE_SIZE)
    _, pfn, _ = p.mm.follow_page(a)
    node = m.nodes[0]
    assert m.audit() == []
    node.buddy.free_one(pfn, 0)  # the page is still mapped: its frame now reads as free
    assert any("free and in a folio" in x for x in m.audit())
    node.buddy.free_one(pfn, 0)  # freed twice: one block, counted twice
    assert any("free blocks counted" in x for x in m.audit())


def test_audit_counts_a_pinned_thp_unmapped_under_its_pin():
    """A 2 MiB folio munmapped while pinned stays allocated, every one of its 512 frames
    (the audit once counted 1 << order in int8 for it: 0)."""
    from offload import Machine

    m = Machine(nodes="dram:16M")
    p = m.spawn()
    a = p.mmap(512 * PAGE_SIZE, folio_size=512 * PAGE_SIZE)
    p.write(a, b"x")
    free = m.nodes[0].free_pages
    with p.pin(a):
        p.munmap(a, 512 * PAGE_SIZE)
        assert m.nodes[0].free_pages == free
        assert m.audit() == []
    assert m.nodes[0].free_pages == free + 512 and m.audit() == []


@pytest.mark.parametrize("field, value", [("obj", 3), ("pins", 1), ("cow", 2), ("state", 1)])
def test_audit_sees_a_free_frame_that_kept_an_owner_pins_or_state(field, value):
    """A free frame must carry nothing of its last folio: a folio allocated there would
    start with it."""
    from offload import Machine

    m = Machine(nodes="dram:16M")
    p = m.spawn()
    a = p.mmap(PAGE_SIZE)
    p.write(a, b"x")
    _, pfn, _ = p.mm.follow_page(a)
    p.munmap(a, PAGE_SIZE)  # the frame is free again
    node = m.nodes[0]
    assert node.order[pfn] < 0 and m.audit() == []
    getattr(node, field)[pfn] = value
    assert any("free frames keep" in x for x in m.audit())


@pytest.mark.parametrize("order", [[2, 0, 1, 2, 0], [0, 1, 2], [2, 1, 0], [1, 1, 1]])
def test_entries_naming_folios_in_any_order_move_each_folio_once(machine, order):
    """Entries naming three large folios in any order, some folios named twice and not
    side by side: each folio moves once, every entry shares its folio's outcome."""
    p = machine.spawn()
    fs = 16 * PAGE_SIZE
    a = p.mmap(3 * fs, folio_size=fs)
    data = fill(p, a, 3 * fs, 9)
    entries = [a + k * fs + (j % 16) * PAGE_SIZE for j, k in enumerate(order)]
    r = p.move_pages(entries, [1] * len(entries))
    assert r.ret == 0 and r.status == [1] * len(entries)
    named = len(set(order))
    assert machine.vmstat["pgmigrate_success"] == named * 16
    assert p.move_pages(pages(a, 3 * fs), None).status == [
        1 if k in order else 0 for k in range(3) for _ in range(16)
    ]
    assert p.read(a, data.size) == data.tobytes()
