"""A conformance suite that any backend's own tests can run.

Subclass :class:`MigratorConformance` in a pytest module and implement
``make_migrator``::

    from offload.testing import MigratorConformance

    class TestMyBackend(MigratorConformance):
        def make_migrator(self):
            return MyBackend(channels=2)

Or call :func:`check_migrator` with a factory from any test runner.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import numpy as np

from .batch import FolioBatch
from .constants import PAGE_SIZE
from .errors import BadArgument
from .machine import Machine
from .migrator import Migrator


def _nodes(nr_pages: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        0: rng.integers(0, 256, (nr_pages, PAGE_SIZE), dtype=np.uint8),
        1: rng.integers(0, 256, (nr_pages, PAGE_SIZE), dtype=np.uint8),
    }


def _layout(kind: str, seed: int) -> tuple[np.ndarray, ...]:
    """(src_node, src_pfn, dst_node, dst_pfn, order) of a batch with a given shape."""
    rng = np.random.default_rng(seed)
    if kind == "contiguous":
        order = np.zeros(64, np.int8)
        src = np.arange(64)
        dst = np.arange(64) + 128
    elif kind == "scattered":
        order = np.zeros(64, np.int8)
        src = rng.permutation(256)[:64]
        dst = rng.permutation(256)[:64] + 256  # never overlapping a source
    elif kind == "mixed":
        order = np.array([9, 0, 3, 0, 4, 1, 0, 2], np.int8)
        # naturally aligned, disjoint slots
        src = np.array([0, 512, 520, 528, 544, 560, 562, 564])
        dst = np.array([1024, 1600, 1608, 1616, 1632, 1648, 1650, 1652])
    else:
        raise BadArgument(f"kind: unknown batch layout {kind!r}")
    n = order.size
    flip = rng.random(n) < 0.5 if kind != "contiguous" else np.zeros(n, bool)
    return (flip.astype(np.int32), src, (~flip).astype(np.int32), dst, order)


def check_batch_copy(mig: Migrator, kind: str = "mixed", seed: int = 0) -> None:
    """Every folio marked copied holds its source bytes; nothing else was written."""
    mem = _nodes(2048, seed)
    before = {k: v.copy() for k, v in mem.items()}
    sn, sp, dn, dp, order = _layout(kind, seed)
    batch = FolioBatch(sn, sp, dn, dp, order, memory=mem)
    mig.offload_copy(batch)
    expect = {k: v.copy() for k, v in before.items()}
    for i in range(len(batch)):
        n = 1 << int(order[i])
        if batch.copied[i]:
            expect[int(dn[i])][dp[i] : dp[i] + n] = before[int(sn[i])][sp[i] : sp[i] + n]
        else:
            # an unmarked folio's destination may hold anything: the CPU rewrites it
            expect[int(dn[i])][dp[i] : dp[i] + n] = mem[int(dn[i])][dp[i] : dp[i] + n]
    for k in mem:
        assert np.array_equal(mem[k], expect[k]), (
            f"{mig.name}: wrong bytes after a {kind} batch copy (node {k})"
        )


def check_migration(mig: Migrator) -> None:
    """A full move_pages through the backend: outcomes, counters and bytes."""
    with Machine(nodes="16M,16M", offload=mig, policy="offload-only") as m:
        p = m.spawn()
        sizes = [PAGE_SIZE, 4 * PAGE_SIZE, 1 << 21]
        addrs, datas = [], []
        for i, fs in enumerate(sizes):
            a = p.mmap(4 * fs, folio_size=fs)
            d = np.random.default_rng(i).integers(0, 256, 4 * fs, dtype=np.uint8)
            p.write(a, d)
            addrs.append(a)
            datas.append(d)
        entries = [a + j * fs for a, fs in zip(addrs, sizes) for j in range(4)]
        with p.pin(addrs[0]):
            r = p.move_pages(entries, [1] * len(entries))
        assert r.status == [-errno.EBUSY] + [1] * (len(entries) - 1), r.status
        for a, d in zip(addrs, datas):
            assert p.read(a, d.size) == d.tobytes(), f"{mig.name}: bytes changed by migration"
        assert m.vmstat["pgmigrate_success"] == 3 + 16 + 2048
        assert mig.folios_migrated + mig.folios_failures >= len(entries) - 1
    # it copes with being torn down and used again
    mig.close()


def check_protocol(mig: Migrator) -> None:
    """Name, capability queries, empty and sub-batches, submit/wait."""
    assert isinstance(mig, Migrator)
    assert isinstance(mig.name, str) and mig.name
    assert isinstance(mig.spec, str) and mig.spec.startswith(mig.name)

    class _Node:
        kind = "dram"

    # every batch of this kit is in host memory: a backend must say it can reach it
    assert mig.can_access(_Node()) is True, "can_access(a dram node) must be True"
    mem = _nodes(64, 1)
    empty = FolioBatch([], [], [], [], [], memory=mem)
    mig.offload_copy(empty)
    batch = FolioBatch([0] * 8, np.arange(8), [1] * 8, np.arange(8) + 32, [0] * 8, memory=mem)
    sub = batch[np.arange(8) % 2 == 0]
    handle = mig.submit(sub)
    handle.result(timeout=30)
    batch.absorb(sub)
    assert not batch.copied[1::2].any()
    for i in np.flatnonzero(batch.copied):
        assert np.array_equal(mem[1][32 + i], mem[0][i])
    mig.close()
    mig.close()


def check_migrator(factory: Callable[[], Migrator]) -> None:
    """Run every conformance check on fresh backends from *factory*."""
    check_protocol(factory())
    for i, kind in enumerate(("contiguous", "scattered", "mixed")):
        mig = factory()
        try:
            check_batch_copy(mig, kind, seed=i)
        finally:
            mig.close()
    check_migration(factory())


class MigratorConformance:
    """pytest mix-in: subclass it and implement :meth:`make_migrator`."""

    def make_migrator(self) -> Migrator:  # pragma: no cover - the subclass provides it
        raise NotImplementedError

    def test_protocol(self) -> None:
        check_protocol(self.make_migrator())

    def test_contiguous_batch(self) -> None:
        self._batch("contiguous")

    def test_scattered_batch(self) -> None:
        self._batch("scattered")

    def test_mixed_orders_batch(self) -> None:
        self._batch("mixed")

    def test_migration(self) -> None:
        check_migration(self.make_migrator())

    def _batch(self, kind: str) -> None:
        mig = self.make_migrator()
        try:
            check_batch_copy(mig, kind)
        finally:
            mig.close()
