"""The one-page move_pages path (``syscalls._move_one``, ``MigrationEngine.migrate_one``)
against the general one.

Two machines built alike get the same random sequence of operations; one-page
move_pages calls on the second are made to take the general path. After every step
everything must be equal: statuses or errors, every byte of every node, the memmap, the
buddy free lists, the reverse map, vmstat, the engine's counts and the CPU path's
counters.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest

from offload import MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, PAGE_SIZE, Machine, syscalls
from offload.backends.cpu_serial import CpuSerial
from offload.buddy import BuddyAllocator

THP = 1 << 21


# -- the buddy allocator's one-block calls ------------------------------------------------


def _buddy_state(b: BuddyAllocator):
    return [x.copy() for x in b._free], list(b._count), b.free_pages


@pytest.mark.parametrize("layout", ["fresh", "aged"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_alloc_one_and_free_one_match_alloc_and_free(layout, seed):
    rng = np.random.default_rng(seed)
    a = BuddyAllocator(4096, layout=layout, seed=seed)
    b = BuddyAllocator(4096, layout=layout, seed=seed)
    held: list[tuple[int, int]] = []
    for _ in range(3000):
        if held and rng.random() < 0.45:
            h, k = held.pop(int(rng.integers(len(held))))
            a.free_one(h, k)
            b.free(np.array([h]), k)
        else:
            k = int(rng.choice([0, 0, 0, 1, 2, 4, 9]))
            got = a.alloc_one(k)
            want = b.alloc(1, k)
            assert got == (int(want[0]) if want.size else -1)
            if got >= 0:
                held.append((got, k))
        sa, sb = _buddy_state(a), _buddy_state(b)
        assert sa[1:] == sb[1:]
        assert all(np.array_equal(x, y) for x, y in zip(sa[0], sb[0]))
    assert held  # the run allocated and freed, and also ran out at times:
    assert a.free_pages < 4096


def test_alloc_one_when_nothing_is_free():
    b = BuddyAllocator(16, max_order=2)
    assert [b.alloc_one(2) for _ in range(5)] == [0, 4, 8, 12, -1]
    assert b.alloc_one(0) == -1 and b.free_pages == 0
    with pytest.raises(Exception, match="order"):
        b.alloc_one(3)


# -- the syscall path, against the general one ---------------------------------------------


def _snapshot(m: Machine) -> dict:
    """Everything a migration can change, as comparable plain values."""
    nodes = []
    for n in m.nodes:
        bud = n.buddy
        nodes.append(
            {
                "frames": n.frames.tobytes(),
                **{
                    a: getattr(n, a).tobytes()
                    for a in ("order", "pins", "obj", "objidx", "state", "cow")
                },
                "free": [x.tobytes() for x in bud._free],
                "count": list(bud._count),
                "free_pages": bud.free_pages,
                "fail_allocs": n.fail_allocs,
            }
        )
    objs = {
        oid: (o.node.tobytes(), o.pfn.tobytes(), o.mapcount.tobytes(), o.ptes.tobytes())
        for oid, o in m.rmap.objects.items()
    }
    engine = {
        k: v for k, v in m.stats["engine"].items() if not k.endswith("_s") and k != "first_remap_at"
    }
    return {
        "nodes": nodes,
        "objects": objs,
        "cow": {k: sorted(v) for k, v in m.rmap.cow.items()},
        "deferred": sorted(m.rmap.deferred),
        "vmstat": dict(m.vmstat),
        "engine": engine,
        "migrators": m.offload.stats["migrators"]["cpu"],
    }


def _outcome(fn):
    try:
        r = fn()
    except OSError as exc:
        return ("OSError", exc.errno, str(exc), getattr(exc, "status", None))
    except Exception as exc:
        return (type(exc).__name__, str(exc))
    if hasattr(r, "status"):
        return ("ok", r.ret, list(r.status))
    return ("ok", r)


class _Twins:
    """Two machines built alike, and the same processes in each."""

    def __init__(self, layout: str, seed: int, cpu: str) -> None:
        self.m = [Machine(nodes="4M,4M,2M", layout=layout, seed=seed, cpu=cpu) for _ in range(2)]
        self.procs: list[list] = [
            [m.spawn(uid=1000), m.spawn(uid=1000), m.spawn(uid=2000)] for m in self.m
        ]
        self.pins: list[list] = [[], []]
        self.general_calls = 0
        self.fast_calls = 0
        self._count_general()

    def _count_general(self) -> None:
        eng = self.m[0].engine
        inner = eng.migrate

        def counted(*a, **k):
            self.general_calls += 1
            return inner(*a, **k)

        eng.migrate = counted

    def both(self, fn):
        return [fn(i, m, self.procs[i]) for i, m in enumerate(self.m)]

    def close(self) -> None:
        for pins in self.pins:
            for p in pins:
                p.release()
        for m in self.m:
            m.close()


def _addresses(procs, rng) -> list[int]:
    out = []
    for v in procs[0].mappings:
        start, length = v[0], v[1]
        out += [start + PAGE_SIZE * int(i) for i in rng.integers(0, length // PAGE_SIZE, 3)]
    return out


def _step(t: _Twins, op: str, addr: int, rng: np.random.Generator, step: int) -> list | None:
    """Apply one random operation to both machines; their outcomes (None: skipped)."""
    if op == "move":
        node = int(rng.choice([0, 1, 2, 0, 1, 2, -1, 3]))
        flags = MPOL_MF_MOVE_ALL if rng.random() < 0.2 else MPOL_MF_MOVE
        who = int(rng.integers(3))
        pid = t.procs[0][0].pid if rng.random() < 0.2 else 0
        shape = int(rng.integers(3))  # list, tuple or array: each takes the scalar path
        pages = [[addr], (addr,), np.array([addr])][shape]
        nodes = [[node], (node,), np.array([node])][shape]

        def move(i, m, ps):
            def call():
                return _outcome(lambda: ps[who].move_pages(pages, nodes, flags, pid))

            if i == 0:
                before = t.general_calls
                r = call()
                t.fast_calls += t.general_calls == before and r[0] == "ok"
                return r
            saved, syscalls._one = syscalls._one, lambda values: None
            try:
                return call()
            finally:
                syscalls._one = saved

        return t.both(move)
    if op == "write":
        data = rng.integers(0, 256, 100, dtype=np.uint8)
        return t.both(lambda i, m, ps: _outcome(lambda: ps[step % 2].write(addr, data)))
    if op == "fork" and len(t.procs[0]) < 6:
        return t.both(lambda i, m, ps: ps.append(ps[0].fork()))
    if op == "pin" and len(t.pins[0]) < 3:
        return t.both(lambda i, m, ps: _outcome(lambda: t.pins[i].append(ps[0].pin(addr))))
    if op == "unpin" and t.pins[0]:
        return t.both(lambda i, m, ps: t.pins[i].pop(0).release())
    if op == "fail":
        node = int(rng.integers(3))
        return t.both(lambda i, m, ps: m.inject_alloc_failures(node, 1))
    if op == "munmap":
        page = addr & ~(PAGE_SIZE - 1)
        return t.both(lambda i, m, ps: _outcome(lambda: ps[0].munmap(page, PAGE_SIZE)))
    if op == "fill":  # take most of a node's memory, so that moves there fail
        node = int(rng.integers(3))

        def fill(i, m, ps):
            n = max(1, m.nodes[node].free_pages - 1)
            return _outcome(lambda: ps[2].mmap(n * PAGE_SIZE, node=node))

        return t.both(fill)
    if op == "free" and t.procs[0][2].mappings:
        return t.both(lambda i, m, ps: ps[2].munmap(*ps[2].mappings[0][:2]))
    return None


@pytest.mark.parametrize(
    "layout, seed, cpu",
    [
        ("aged", 1, "cpu-serial"),
        ("fresh", 2, "cpu-serial"),
        ("aged", 3, "cpu-batched"),
        ("fresh", 4, "cpu-batched"),
    ],
)
def test_one_page_move_pages_matches_the_general_path(layout, seed, cpu):
    rng = np.random.default_rng(seed)
    t = _Twins(layout, seed, cpu)
    try:

        def setup(i, m, ps):
            p = ps[0]
            regions = [
                p.mmap(32 * PAGE_SIZE),
                p.mmap(16 * PAGE_SIZE, node=1),
                p.mmap(THP, folio_size=THP),
                p.mmap(8 * 16 * PAGE_SIZE, folio_size=16 * PAGE_SIZE),
                p.mmap(8 * PAGE_SIZE, shared=True),
                p.mmap(8 * PAGE_SIZE, populate=False),
            ]
            for a, (_, n, _, _) in zip(regions, p.mappings):
                p.write(a, np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8))
            p.share(regions[4], 4 * PAGE_SIZE, into=ps[1])
            p.munmap(regions[5] + PAGE_SIZE, PAGE_SIZE)  # a hole
            return regions

        t.both(setup)
        ops = ["move"] * 12 + ["write", "fork", "pin", "unpin", "fail", "munmap", "fill", "free"]
        for step in range(500):
            op = ops[int(rng.integers(len(ops)))]
            addrs = _addresses(t.procs[0], rng) + [12345 * PAGE_SIZE, 0, -PAGE_SIZE]
            addr = int(rng.choice(addrs)) + int(rng.integers(0, 4)) * 8
            got = _step(t, op, addr, rng, step)
            if got is None:
                continue
            assert got[0] == got[1], f"step {step}: {op} at {addr:#x}"
            a, b = (_snapshot(m) for m in t.m)
            for key in a:
                assert a[key] == b[key], f"step {step}: {op} at {addr:#x}: {key} differs"
            assert t.m[0].audit() == [], f"step {step}: {op} at {addr:#x}"
        # both paths ran: the scalar one moved pages, the general one took the rest
        assert t.fast_calls >= 20
        assert t.general_calls >= 3, (t.fast_calls, t.general_calls)
    finally:
        t.close()


def test_a_one_page_move_takes_the_scalar_path_only_when_nothing_else_is_involved():
    """A registered migrator, a subclass of a shipped CPU path, verify mode, a pinned or
    large folio: each goes through the general migration."""

    class Counting(CpuSerial):
        name = "counting"
        calls = 0

        def offload_copy(self, batch):
            Counting.calls += 1
            super().offload_copy(batch)

    def general_runs(m: Machine, size: int = PAGE_SIZE, pin: bool = False) -> int:
        p = m.spawn()
        a = p.mmap(size, folio_size=size)
        p.write(a, b"data")
        calls = []
        inner = m.engine.migrate
        m.engine.migrate = lambda *x, **k: calls.append(1) or inner(*x, **k)
        if pin:
            with p.pin(a):
                r = p.move_pages([a], [1])
            assert r.status == [-errno.EBUSY]
        else:
            assert p.move_pages([a], [1]).status == [1]
            assert p.read(a, 4) == b"data"
        return len(calls)

    with Machine(nodes="8M,8M") as m:
        assert general_runs(m) == 0
        assert general_runs(m, pin=True) == 1
        assert general_runs(m, size=THP) == 1
    with Machine(nodes="8M,8M", offload="dma-threads") as m:
        assert general_runs(m) == 1
    with Machine(nodes="8M,8M", verify=True) as m:
        assert general_runs(m) == 1
    with Machine(nodes="8M,8M", cpu=Counting()) as m:
        assert general_runs(m) == 1
        assert Counting.calls == 1


@pytest.mark.parametrize(
    "values, want",
    [
        ([5], 5),
        ((5,), 5),
        (np.array([5], dtype=np.uint16), 5),
        ([np.int64(-7)], -7),
        ([(1 << 63) - 1], (1 << 63) - 1),
        ([1 << 63], None),  # out of range: the general path says so
        ([True], None),
        ([1.0], None),
        (["1"], None),
        ([1, 2], None),
        ([], None),
        (np.array([[5]]), None),
        (np.array([5.0]), None),
        (np.array([True]), None),
        (5, None),
        (None, None),
    ],
)
def test_only_one_integer_entry_takes_the_scalar_path(values, want):
    assert syscalls._one(values) == want
