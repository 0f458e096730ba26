"""Kernel versions in the model: one switch per behaviour that changed, chosen by
``Machine(kernel=...)``, each checked here on the versions on both sides of it; and the
causes a second set of real-kernel scenarios found on 6.1 itself."""

from __future__ import annotations

import errno

import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, BadArgument, BadArgumentType, Machine
from offload.kernels import (
    DEFAULT_KERNEL,
    SUPPORTED_KERNELS,
    SWITCHES,
    image_version,
    kernel,
    parse_version,
)

THP = 2 << 20


def used(m: Machine) -> list[int]:
    return [n.nr_pages - n.free_pages for n in m.nodes]


def test_versions_and_switches():
    assert parse_version("6.12.117+deb13-amd64") == (6, 12)
    assert DEFAULT_KERNEL == SUPPORTED_KERNELS[-1] == "7.2"
    assert Machine(nodes="4M").kernel == kernel("7.2")
    old, mid, new = (kernel(v) for v in SUPPORTED_KERNELS)
    for s in SWITCHES:  # every switch is off on 6.1 and on on 7.2; its date decides 6.12
        assert getattr(old, s.name) is False and getattr(new, s.name) is True, s.name
        assert getattr(mid, s.name) is (s.since <= (6, 12)), s.name
        assert s.evidence and s.what
    assert kernel("7.9").version == "7.9" and kernel("7.9").huge_zero_write_thp
    assert any("untouched_enoent: off" in line for line in old.describe())


@pytest.mark.parametrize(
    "bad, exc", [("5.4", BadArgument), ("x", BadArgument), (6.1, BadArgumentType)]
)
def test_a_kernel_the_model_cannot_follow_is_refused(bad, exc):
    with pytest.raises(exc, match="kernel"):
        Machine(nodes="4M", kernel=bad)


def test_the_version_is_read_from_a_kernel_image(tmp_path):
    img = bytearray(0x1000)
    img[0x202:0x206] = b"HdrS"
    img[0x20E:0x210] = (0x300).to_bytes(2, "little")
    img[0x500 : 0x500 + 40] = b"6.12.117+deb13-amd64 (debian-kernel@)\0".ljust(40, b"\0")
    (tmp_path / "vmlinuz").write_bytes(bytes(img))
    assert image_version(tmp_path / "vmlinuz") == "6.12.117+deb13-amd64"
    (tmp_path / "junk").write_bytes(b"not a kernel")
    assert image_version(tmp_path / "junk") is None
    assert image_version(tmp_path / "missing") is None


@pytest.mark.parametrize("version", SUPPORTED_KERNELS)
def test_never_touched_pages(version):
    """-ENOENT from 6.12; before, -EFAULT for anonymous memory and -ENOENT for shared
    memory (its mapping has a fault handler)."""
    with Machine(nodes="8M,8M", kernel=version) as m:
        p, q = m.spawn(), m.spawn()
        a = p.mmap(2 * PAGE_SIZE, populate=False)
        s = p.mmap(2 * PAGE_SIZE, shared=True)
        b = p.share(s, 2 * PAGE_SIZE, into=q)
        anon = -errno.ENOENT if m.kernel.untouched_enoent else -errno.EFAULT
        assert p.move_pages([a, a + PAGE_SIZE], None).status == [anon, anon]
        assert q.move_pages([b], None).status == [-errno.ENOENT]
        assert p.move_pages([a], [1]).status == [anon]  # the one-page path agrees
        assert q.move_pages([b, b + PAGE_SIZE], [1, 1]).status == [-errno.ENOENT] * 2


@pytest.mark.parametrize("version", SUPPORTED_KERNELS)
def test_a_partly_unmapped_thp_on_migration(version):
    """Up to 6.9 it migrates whole. From 6.10 it is split (thp_migration_fail and
    _split +1), and only its mapped pages move; from 6.12 its zero-filled pages map the
    shared zero page instead (-EFAULT, no frame)."""
    with Machine(nodes="8M,8M", kernel=version) as m:
        p = m.spawn()
        a = p.mmap(THP, folio_size=THP)
        p.write(a + PAGE_SIZE, b"data")
        p.write(a + 200 * PAGE_SIZE, b"more")
        p.munmap(a + THP // 2, THP // 2)
        r = p.move_pages([a], [1])
        assert r.status == [1] and r.ret == 0
        st = p.move_pages(pages(a, THP // 2), None).status
        v = m.vmstat
        if not m.kernel.split_partly_mapped_thp:
            assert v["thp_migration_success"] == 1 and used(m) == [0, 512]
            assert st == [1] * 256
        else:
            assert v["thp_migration_fail"] == v["thp_migration_split"] == 1
            assert v["thp_migration_success"] == 0 and v["pgmigrate_success"] == 512
            if m.kernel.split_maps_zero_pages:
                assert used(m) == [0, 2]
                want = [-errno.EFAULT] * 256
                want[1] = want[200] = 1
                assert st == want
            else:
                assert used(m) == [0, 256] and st == [1] * 256
        assert p.read(a + PAGE_SIZE, 4) == b"data" and p.read(a + 200 * PAGE_SIZE, 4) == b"more"
        assert p.read(a, PAGE_SIZE) == bytes(PAGE_SIZE)
        assert m.audit() == []


@pytest.mark.parametrize("version", SUPPORTED_KERNELS)
def test_a_thp_range_partly_unmapped_before_its_first_touch_faults_a_small_page(version):
    """A PMD fault needs the whole aligned 2 MiB inside the mapping: after a munmap of
    part of the slot, a write faults one 4 KiB page, and nothing is held that no one
    maps (it was a whole THP, 512 frames, never queued for reclaim)."""
    with Machine(nodes="8M,8M", kernel=version) as m:
        p = m.spawn()
        a = p.mmap(THP, folio_size=THP, populate=False)
        p.munmap(a + 256 * PAGE_SIZE, 256 * PAGE_SIZE)
        p.write(a, b"x")
        assert used(m) == [1, 0]
        assert p.move_pages([a], [1]).status == [1]
        assert m.vmstat["pgmigrate_success"] == 1 and m.vmstat["thp_migration_success"] == 0
        assert p.read(a, 1) == b"x" and m.audit() == []


@pytest.mark.parametrize(
    "read_at, mapped",
    [
        (5, range(3, 19)),  # aligned start 0 is before the mapping: it starts at 3
        (20, range(16, 32)),  # aligned by virtual address, not by the mapping's start
    ],
)
def test_fault_around_window(read_at, mapped):
    """do_fault_around maps the 16 pages from the fault's address aligned down to 64
    KiB, or from the mapping's start when that is later (as the real kernel showed in
    kernel-check shared_fault_around_front_unmapped), clamped to the mapping."""
    with Machine(nodes="8M,8M") as m:
        p = m.spawn()
        s = p.mmap(32 * PAGE_SIZE, shared=True)
        data = fill(p, s, 32 * PAGE_SIZE, 5)
        c = p.fork()  # no page table entries for shared memory in the child yet
        c.munmap(s, 3 * PAGE_SIZE)
        got = c.read(s + read_at * PAGE_SIZE, 4)
        assert got == data[read_at * PAGE_SIZE : read_at * PAGE_SIZE + 4].tobytes()
        st = p.move_pages(pages(s, 32 * PAGE_SIZE), [1] * 32).status
        want = [-errno.EACCES if i in mapped else 1 for i in range(32)]
        assert st == want
        assert p.read(s, 32 * PAGE_SIZE) == data.tobytes()
        assert m.audit() == []


def test_the_model_machine_of_kernel_check_follows_the_real_kernel():
    from offload.kcheck import model_kernel

    assert model_kernel("6.1.0-57-amd64") == "6.1"
    assert model_kernel("7.2.13+deb14-amd64") == "7.2"
    assert model_kernel(None) is None


def test_every_departure_carries_its_evidence_and_no_other_difference_hides():
    """A departure names its key and shows what the kernel and the model returned; a
    difference no documented departure explains (once: never-touched -EFAULT against
    -ENOENT, now a version switch) is a mismatch."""
    from offload.kcheck.compare import DEPARTURES, compare
    from offload.kcheck.observe import Observation
    from offload.kcheck.scenario import Scenario, mmap, move, spawn

    sc = Scenario("t", "test", (spawn(0), mmap(0, 0, 2), move(0, [(0, 0), (0, 1)], [1, 1])))

    def obs(ret, status):
        return Observation(steps={2: dict(ret=ret, errno=0, status=status)}, vmstat=(0,) * 5)

    v = compare(sc, obs(2, [-14, -14]), obs(0, [-14, -14]))  # model, kernel
    assert v.verdict == "departure" and v.departures == ["ret_counts_entries"]
    assert v.evidence and "[ret_counts_entries]" in v.evidence[0]
    assert "kernel ret=0" in v.evidence[0] and "model ret=2" in v.evidence[0]
    assert set(v.departures) <= set(DEPARTURES)
    w = compare(sc, obs(2, [-2, -2]), obs(2, [-14, -14]))
    assert w.verdict == "mismatch" and not w.departures
    assert "untouched_enoent" not in DEPARTURES


@pytest.mark.parametrize("version", SUPPORTED_KERNELS)
def test_a_thp_a_child_maps_in_part_is_shared_per_page_or_per_folio(version):
    """Up to 6.8 the page named decides (page_mapcount): the parent moves the THP by a
    page only it maps, and -EACCES by a page the child maps too. From 6.9 the folio
    decides: either page is -EACCES while the child maps any of it."""
    with Machine(nodes="8M,8M", kernel=version) as m:
        p = m.spawn()
        a = p.mmap(THP, folio_size=THP)
        data = fill(p, a, THP, 1)
        c = p.fork()
        c.munmap(a + THP // 2, THP // 2)
        only_parent, both = a + 300 * PAGE_SIZE, a + 10 * PAGE_SIZE
        assert p.move_pages([both], [1]).status == [-errno.EACCES]
        r = p.move_pages([only_parent], [1])
        if m.kernel.shared_per_folio:
            assert r.status == [-errno.EACCES] and used(m) == [512, 0]
        else:
            assert r.status == [1] and m.vmstat["thp_migration_success"] == 1
            assert c.move_pages([both], None).status == [1]  # the child follows it
        assert bytes(p.read(a, THP)) == data.tobytes()
        assert bytes(c.read(a, THP // 2)) == data[: THP // 2].tobytes()
        assert m.audit() == []


def test_a_write_to_a_thp_shared_after_fork_copies_only_that_page():
    """do_huge_pmd_wp_page: the writer's PMD is split and the page written gets a 4 KiB
    copy; the rest of the THP stays shared (still -EACCES to move for the parent)."""
    with Machine(nodes="8M,8M") as m:
        p = m.spawn()
        a = p.mmap(THP, folio_size=THP)
        data = fill(p, a, THP, 2)
        c = p.fork()
        c.write(a + 5 * PAGE_SIZE, b"child")
        assert used(m) == [513, 0]  # the THP and one copy, not two THPs
        assert p.move_pages([a + 5 * PAGE_SIZE], [1]).status == [-errno.EACCES]
        assert c.move_pages([a + 5 * PAGE_SIZE], [1]).status == [1]  # its own copy
        assert bytes(p.read(a, THP)) == data.tobytes()
        want = bytearray(data.tobytes())
        want[5 * PAGE_SIZE : 5 * PAGE_SIZE + 5] = b"child"
        assert bytes(c.read(a, THP)) == bytes(want)
        assert m.audit() == []


def test_a_zombie_has_no_memory_and_a_non_dumpable_task_needs_cap_sys_ptrace():
    """find_mm_struct / kernel_migrate_pages: EINVAL for a zombie (its pid is still
    found), after the ptrace check (EPERM from another uid) and, for migrate_pages,
    after the node masks. __ptrace_may_access: a non-dumpable target of the same uid
    needs CAP_SYS_PTRACE; a task may always act on itself."""
    with Machine(nodes="8M,8M") as m:
        p, z, other = m.spawn(), m.spawn(), m.spawn(uid=1001)
        a = z.mmap(2 * PAGE_SIZE)
        z.write(a, b"gone")
        z.exit()
        assert used(m) == [0, 0]  # its memory is freed
        for call in (
            lambda: p.move_pages([a], [1], pid=z.pid),
            lambda: p.move_pages([a], None, pid=z.pid),
            lambda: p.move_pages([], [], pid=z.pid),
            lambda: p.migrate_pages([0], [1], pid=z.pid),
            lambda: p.migrate_pages([0], [0], pid=z.pid),
        ):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            other.move_pages([a], [1], pid=z.pid)
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:  # the masks come first: a node with no memory
            p.migrate_pages([0], [2], pid=z.pid)
        assert e.value.errno == errno.EPERM
        with pytest.raises(BadArgument):
            z.move_pages([a], [1])  # a zombie makes no calls

        q, tracer = m.spawn(), m.spawn(cap_sys_ptrace=True)
        b = q.mmap(PAGE_SIZE)
        q.write(b, b"keep")
        q.set_dumpable(False)
        with pytest.raises(OSError) as e:
            p.move_pages([b], [1], pid=q.pid)
        assert e.value.errno == errno.EPERM and "dumpable" in str(e.value)
        with pytest.raises(OSError) as e:
            p.migrate_pages([0], [1], pid=q.pid)
        assert e.value.errno == errno.EPERM
        assert q.move_pages([b], None, pid=q.pid).status == [0]  # itself, by its pid
        assert tracer.move_pages([b], [1], pid=q.pid).status == [1]
        q.set_dumpable(True)
        assert p.move_pages([b], [0], pid=q.pid).status == [0]
        assert q.read(b, 4) == b"keep"
        with pytest.raises(BadArgumentType):
            q.set_dumpable(1)
        assert m.audit() == []
