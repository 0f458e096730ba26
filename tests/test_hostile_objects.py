"""Plugins that do hostile things to their batch object or to attribute look-ups.

Whatever a plugin rebinds on the batch it was handed, and whatever its own attribute
look-ups do (recurse, raise), the migration succeeds with every byte in place: marks
count only when they are the bool array the scheduler handed over, and trust comes from
the class (folio-offload's own, by identity), never from asking the instance.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fill, pages

import offload
from offload import PAGE_SIZE, Machine
from offload.migrator import safe_name, safe_spec, shipped_as


def copy_all(batch) -> None:
    """Really copy every folio of *batch* (what the hostile plugins do before misbehaving)."""
    offload.devmem.copy_folios(batch[:])


def _rebinder(name: str, rebind):
    def offload_copy(self, batch):
        copy_all(batch)
        rebind(batch)

    return type(f"Rebind_{name}", (offload.Migrator,), {"name": name, "offload_copy": offload_copy})


def _set(attr, value):
    return lambda b: setattr(b, attr, value(b) if callable(value) else value)


def _inplace_dtype(b):
    b.copied[:] = True
    b.copied.dtype = np.uint8  # same item size: numpy allows it in place


def _inplace_shape(b):
    b.copied[:] = True
    b.copied.shape = (len(b.copied), 1)


REBINDS = {
    "copied-list": _set("copied", lambda b: [True] * len(b.copied)),
    "copied-scalar": _set("copied", True),
    "copied-none": _set("copied", None),
    "copied-int": _set("copied", lambda b: np.ones(len(b.copied), dtype=np.int64)),
    "copied-shape": _set("copied", lambda b: np.ones((len(b.copied), 2), dtype=bool)),
    "copied-short": _set("copied", lambda b: np.ones(max(0, len(b.copied) - 1), dtype=bool)),
    "copied-own-array": _set("copied", lambda b: np.ones(len(b.copied), dtype=bool)),
    "copied-dtype-inplace": _inplace_dtype,
    "copied-shape-inplace": _inplace_shape,
    "index-rebound": _set("index", lambda b: np.arange(len(b.copied))[::-1] + 7),
    "index-none": _set("index", None),
    "index-scalar": _set("index", 3),
    "src-pfn-none": _set("src_pfn", None),
    "order-list": _set("order", [9]),
    "memory-none": _set("memory", None),
}
REBINDERS = [_rebinder(k, v) for k, v in REBINDS.items()]


class RecursingLookup(offload.Migrator):
    """Delegates unknown attributes to an inner object it never set: every look-up of a
    missing attribute recurses (RecursionError)."""

    name = "recursing-lookup"

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def offload_copy(self, batch):
        copy_all(batch)
        batch.copied[:] = True


class RaisingLookup(offload.Migrator):
    """Every missing attribute raises NotImplementedError (not AttributeError)."""

    name = "raising-lookup"
    options = {"depth": offload.Option(int, min=1, max=4)}  # never set: spec asks for it

    def __getattr__(self, attr):
        raise NotImplementedError(attr)

    def offload_copy(self, batch):
        copy_all(batch)
        batch.copied[:] = True


class RaisingName(offload.Migrator):
    """Its name and spec are properties that raise; its copies are right."""

    @property
    def name(self):  # type: ignore[override]
        raise RuntimeError("no name today")

    @property
    def spec(self):  # type: ignore[override]
        raise RuntimeError("no spec today")

    def offload_copy(self, batch):
        copy_all(batch)
        batch.copied[:] = True


class NoInitRecursing(RecursingLookup):
    """A subclass that forgot its ``__init__`` and shadows ``should_batch`` with junk."""

    name = "no-init"

    def __init__(self):  # deliberately no super().__init__() and no _inner
        pass

    def should_batch(self, batch):
        return self._inner.should_batch(batch)


LOOKUPS = [RecursingLookup, RaisingLookup, RaisingName, NoInitRecursing]
POLICIES = ["offload-only", "static:0.5", "adaptive", "autotune"]


def run_moves(m: Machine) -> None:
    """Base pages, a THP and mTHPs moved there and back; bytes, statuses, audit."""
    p = m.spawn()
    a = p.mmap(96 * PAGE_SIZE)
    t = p.mmap(2 << 20, folio_size=2 << 20)
    h = p.mmap(16 * 16 * PAGE_SIZE, folio_size=16 * PAGE_SIZE)
    regions = [(a, 96 * PAGE_SIZE), (t, 2 << 20), (h, 256 * PAGE_SIZE)]
    data = [fill(p, r, n, 3 + i) for i, (r, n) in enumerate(regions)]
    for dst in (1, 0):
        for r, n in regions:
            entries = pages(r, n)
            res = p.move_pages(entries, [dst] * len(entries))
            assert res.ret == 0 and res.status == [dst] * len(entries)
            assert p.move_pages(entries, None).status == [dst] * len(entries)
        for (r, n), d in zip(regions, data):
            assert p.read(r, n) == d.tobytes()
        assert m.audit() == []
    # the reports still read, whatever the plugin's look-ups do
    assert isinstance(m.offload.stats["migrators"]["cpu"]["spec"], str)
    assert repr(m)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("cls", REBINDERS, ids=lambda c: c.name)
def test_an_offload_that_rebinds_its_batch_never_fails_a_migration(cls, policy):
    mig = cls()
    with Machine(nodes="16M,16M", offload=mig, policy=policy, batch_pages=64) as m:
        run_moves(m)
        # marks that were not the handed bool array count for nothing
        if cls.name not in ("index-rebound", "index-none", "index-scalar", "src-pfn-none"):
            assert mig.folios_migrated == 0, cls.name
        assert m.offload.stats["migrators"]["offload"]["spec"] == cls.name


@pytest.mark.parametrize("cls", REBINDERS, ids=lambda c: c.name)
def test_a_rebinding_provider_beside_another_never_fails_a_migration(cls):
    """One of two providers, split over by the cost model (calibrated on scratch
    batches first, where it rebinds too)."""
    with Machine(
        nodes="16M,16M",
        offload=[cls(), "dma-threads:channels=2"],
        policy="adaptive",
        batch_pages=64,
    ) as m:
        run_moves(m)


@pytest.mark.parametrize("cls", REBINDERS, ids=lambda c: c.name)
def test_a_cpu_path_that_rebinds_its_batch_never_fails_a_migration(cls):
    with Machine(nodes="16M,16M", cpu=cls(), batch_pages=64) as m:
        run_moves(m)


@pytest.mark.parametrize("policy", ["cpu-only", "autotune", "threshold:4M"])
@pytest.mark.parametrize("cls", REBINDERS, ids=lambda c: c.name)
def test_a_cpu_path_that_rebinds_its_batch_beside_an_idle_engine(cls, policy):
    """An engine registered, the policy giving it nothing (every batch, or some): the
    CPU path is handed the whole batch's folios, as a copy of its own."""
    with Machine(
        nodes="16M,16M", cpu=cls(), offload="dma-threads", policy=policy, batch_pages=64
    ) as m:
        run_moves(m)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("cls", LOOKUPS, ids=lambda c: c.__name__)
def test_an_offload_whose_lookups_raise_never_fails_a_migration(cls, policy):
    mig = cls()
    with Machine(nodes="16M,16M", offload=mig, policy=policy, batch_pages=64) as m:
        assert m.offload.active is mig
        run_moves(m)
        assert isinstance(m.offload.stats["migrators"]["offload"]["spec"], str)


@pytest.mark.parametrize("cls", LOOKUPS, ids=lambda c: c.__name__)
def test_a_cpu_path_whose_lookups_raise_never_fails_a_machine(cls):
    with Machine(nodes="16M,16M", cpu=cls(), batch_pages=64) as m:
        run_moves(m)
    # and as the offload beside it, both at once
    with Machine(nodes="16M,16M", cpu=cls(), offload=cls(), policy="static:0.5") as m:
        run_moves(m)


@pytest.mark.parametrize("cls", LOOKUPS, ids=lambda c: c.__name__)
def test_registration_of_a_plugin_with_raising_lookups(cls):
    with Machine(nodes="8M,8M") as m:
        mig = cls()
        m.offload.register(mig, "all")
        with pytest.raises(OSError) as e:
            m.offload.register(cls(), "all")  # EBUSY, its message names the active one
        assert e.value.errno == 16
        m.offload.unregister(mig)


def test_trust_is_by_class_identity():
    from offload.backends.cpu_batched import CpuBatched
    from offload.backends.cpu_serial import CpuSerial
    from offload.backends.dcbm import DmaThreads

    assert shipped_as(CpuSerial()).plain_copy
    assert shipped_as(CpuBatched(threads=1)).plain_copy
    d = DmaThreads(channels=1)
    assert shipped_as(d) is not None and not shipped_as(d).plain_copy
    d.close()

    class Sub(CpuSerial):
        pass

    class Claims(offload.Migrator):
        _trusted = True  # the old private flag means nothing now
        _plain_copy = True

        def offload_copy(self, batch):
            pass

    assert shipped_as(Sub()) is None and shipped_as(Claims()) is None
    for cls in LOOKUPS:
        assert shipped_as(cls()) is None
        assert isinstance(safe_name(cls()), str) and isinstance(safe_spec(cls()), str)


def test_a_subclass_of_a_shipped_cpu_path_is_guarded():
    """A CPU path subclassing cpu-serial that marks without copying: as a plugin its
    marks are taken, so verify mode must catch it; the scalar one-page path, which copies
    in the CPU path's place, is not taken for it."""
    from offload.backends.cpu_serial import CpuSerial

    class Liar(CpuSerial):
        def offload_copy(self, batch):
            batch.copied[:] = True

    with Machine(nodes="8M,8M", cpu=Liar(), verify=True) as m:
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        d = fill(p, a, 8 * PAGE_SIZE, 9)
        assert p.move_pages([a], [1]).status == [1]
        assert p.move_pages(pages(a, 8 * PAGE_SIZE), [1] * 8).ret == 0
        assert p.read(a, d.size) == d.tobytes()
        assert m.cpu.verify_failures >= 8
