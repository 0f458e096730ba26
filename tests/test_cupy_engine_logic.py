"""The cupy engine's logic against a host-memory stand-in for CuPy (no GPU needed)."""

import sys

import fake_cupy
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, Machine
from offload.backends.dcbm.cupy_engine import CupyDcbm
from offload.testing import check_migrator


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    fake_cupy.log.update(memcpy=0, launch=0)
    yield fake_cupy.log


@pytest.mark.parametrize(
    "kw",
    [
        dict(path="memcpy"),
        dict(path="kernel"),
        dict(path="auto", coalesce=False),
        dict(channels=16),
    ],
)
def test_conformance_with_the_stand_in(kw):
    check_migrator(lambda: CupyDcbm(**kw))


def test_auto_path_uses_the_kernel_for_many_small_folios(fake):
    mig = CupyDcbm(channels=2, coalesce=False)
    with Machine(nodes="16M,16M", offload=mig, policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        data = fill(p, a, 64 * PAGE_SIZE, 1)
        assert p.move_pages(pages(a, 64 * PAGE_SIZE), [1] * 64).ret == 0
        assert fake["launch"] == 2 and fake["memcpy"] == 0  # one launch per channel
        t = p.mmap(4 << 21, folio_size=1 << 21)
        dt = fill(p, t, 4 << 21, 2)
        assert p.move_pages(pages(t, 4 << 21, 1 << 21), [1] * 4).ret == 0
        assert fake["memcpy"] == 4  # large folios: one memcpyAsync each
        assert p.read(a, data.size) == data.tobytes() and p.read(t, dt.size) == dt.tobytes()
        assert len(fake["registered"]) == 2  # both host nodes pinned while in use
    mig.close()  # the caller owns a backend it passed in
    assert not fake["registered"]  # and unpinned at close
