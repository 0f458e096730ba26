"""The cupy engine's logic against a host-memory stand-in for CuPy and cuda.bindings (no
GPU needed): every issue path, the channels, the pinning, the batch path's absence."""

import builtins

import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, BackendUnavailable, Machine, SpecError
from offload.backends.dcbm import cupy_engine, standin
from offload.backends.dcbm.cupy_engine import CupyDcbm
from offload.testing import check_migrator


@pytest.fixture(autouse=True)
def fake():
    with standin.installed():
        standin.reset()
        standin.log["registered"].clear()  # what another test left pinned is not ours
        yield standin.log


@pytest.mark.parametrize(
    "kw",
    [
        dict(path="memcpy"),
        dict(path="kernel"),
        dict(path="batch"),
        dict(path="auto", coalesce=False),
        dict(channels=16),
        dict(channels=3, path="batch", coalesce=False),
    ],
)
def test_conformance_with_the_stand_in(kw):
    check_migrator(lambda: CupyDcbm(**kw))


def test_auto_takes_the_path_of_least_predicted_time(fake):
    mig = CupyDcbm(channels=2, coalesce=False)
    eng = mig.engine
    with Machine(nodes="16M,16M", offload=mig, policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        data = fill(p, a, 64 * PAGE_SIZE, 1)
        assert p.move_pages(pages(a, 64 * PAGE_SIZE), [1] * 64).ret == 0
        # 32 pages a channel: a call per page costs more than one batch call
        assert eng.last_paths == {"batch": 2} and fake["batch"] == 2 and fake["memcpy"] == 0
        eng.costs.pop("batch")  # without it: one kernel launch per channel
        assert p.move_pages(pages(a, 64 * PAGE_SIZE), [0] * 64).ret == 0
        assert eng.last_paths == {"kernel": 2} and fake["launch"] == 2
        t = p.mmap(4 << 21, folio_size=1 << 21)
        dt = fill(p, t, 4 << 21, 2)
        assert p.move_pages(pages(t, 4 << 21, 1 << 21), [1] * 4).ret == 0
        # a THP a batch (the 512-page limit): one memcpyAsync each
        assert eng.last_paths == {"memcpy": 1} and fake["memcpy"] == 4
        assert p.read(a, data.size) == data.tobytes() and p.read(t, dt.size) == dt.tobytes()
        assert len(fake["registered"]) == 2  # both host nodes pinned while in use
    mig.close()  # the caller owns a backend it passed in
    assert not fake["registered"]  # and unpinned at close


def test_measured_costs_from_a_file_steer_auto(tmp_path):
    costs = tmp_path / "costs.json"
    costs.write_text(
        '{"memcpy": {"fixed_us": 0, "per_folio_us": 0.1, "gbps": 50},'
        ' "kernel": {"fixed_us": 50, "per_folio_us": 0, "gbps": 10}}'
    )
    eng = CupyDcbm(costs=str(costs)).engine
    assert eng.choose(32, 32 * PAGE_SIZE) == "memcpy"  # measured: memcpy calls are cheap
    assert CupyDcbm().engine.choose(32, 32 * PAGE_SIZE) != "memcpy"  # the anchors say not
    for bad in ('{"warp": {"fixed_us": 1, "per_folio_us": 1, "gbps": 1}}', "{}", "[1]", "no"):
        costs.write_text(bad)
        with pytest.raises(SpecError, match="costs"):
            CupyDcbm(costs=str(costs))
    with pytest.raises(SpecError, match="costs"):
        CupyDcbm(costs=str(tmp_path / "missing.json"))


def _move_to_node_1(m: Machine, npages: int) -> None:
    """A new process's region of *npages* filled pages moves to node 1, every byte
    intact."""
    p = m.spawn()
    a = p.mmap(npages * PAGE_SIZE)
    data = fill(p, a, npages * PAGE_SIZE, 3)
    assert p.move_pages(pages(a, npages * PAGE_SIZE), [1] * npages).ret == 0
    assert p.read(a, data.size) == data.tobytes()


def test_the_batch_path_issues_one_call_per_event_grain(fake):
    mig = CupyDcbm(channels=2, path="batch", coalesce=False)
    with Machine(nodes="16M,16M", offload=mig, policy="offload-only") as m:
        _move_to_node_1(m, 100)
        # two channels of 50 descriptors, a call per 32: 2 + 2
        assert fake["batch"] == 4 and fake["memcpy"] == 0 and fake["launch"] == 0
    mig.close()


def test_the_batch_path_says_what_to_install_where_cuda_bindings_is_missing(monkeypatch):
    real_import = builtins.__import__

    def no_bindings(name, *args, **kwargs):
        if name.startswith("cuda"):
            raise ImportError("No module named 'cuda'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bindings)
    ok, why = cupy_engine.batch_status()
    assert not ok and "cuda-bindings" in why
    with pytest.raises(BackendUnavailable, match="cuda-bindings"):
        CupyDcbm(path="batch")


def test_what_the_engine_pinned_stays_alive_until_it_unpins_it(fake, monkeypatch):
    """The default policy calibrates the engine on scratch buffers of its own, which the
    engine pins as it pins a node's frames. Freed while still registered, a buffer's
    address could be handed to a new array, which the engine would take for pinned
    (its registrations are by address): the GPU would then copy the old pages. So the
    engine keeps every array it pinned until it unpins them all at close."""
    import gc
    import weakref

    from offload import calibrate

    made = []
    real = calibrate.Scratch

    class Watched(real):  # type: ignore[misc,valid-type]
        def __init__(self, pages: int) -> None:
            super().__init__(pages)
            made.extend(weakref.ref(a) for a in self.memory.values())

    monkeypatch.setattr("offload.scheduler.Scratch", Watched)
    mig = CupyDcbm(channels=2)
    with Machine(nodes="16M,16M", offload=mig, policy="adaptive") as m:
        _move_to_node_1(m, 64)
    gc.collect()
    assert made and all(r() is not None for r in made)  # calibrated, scratch pinned, alive
    assert {r().ctypes.data for r in made} <= fake["registered"]
    mig.close()
    # unpinned, and no longer held by the engine (whether they are freed now is up to
    # whatever else still refers to them)
    assert not fake["registered"] and not mig.engine._registered
