"""Shared fixtures: machines over every built-in backend, and content helpers."""

from __future__ import annotations

import numpy as np
import pytest

from offload import PAGE_SIZE, Machine

#: Every CPU-runnable backend; the same test bodies run over each (as CuPy's tests do).
CPU_BACKENDS = [
    "cpu-serial",
    "cpu-batched",
    "cpu-batched:threads=1",
    "dma-threads",
    "dma-threads:channels=4",
    "dma-threads:channels=16,coalesce=false",
    "emu:channels=4,gbps=50,setup_us=5,per_folio_us=0.1",
]


def gpu_status() -> tuple[bool, str]:
    """Whether the cupy backend can run here, and why not (a cached child-process check)."""
    from offload import registry

    info = registry.info("cupy")
    return info.available, info.reason


GPU_OK, GPU_REASON = gpu_status()
#: The GPU backends, run through the same test bodies when a GPU is usable.
GPU_BACKENDS = ["cupy:channels=4", "cupy:channels=2,path=kernel", "cupy:channels=1,path=memcpy"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One marker, ``gpu``, and it skips by itself where no GPU is usable (as CuPy's
    tests do), with the reason."""
    if GPU_OK:
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {GPU_REASON}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def make_machine(backend: str = "cpu-serial", nodes: str = "16M,16M", **kw) -> Machine:
    """A machine whose batch copies go to *backend* (``cpu-serial``: no migrator)."""
    if backend == "cpu-serial":
        return Machine(nodes=nodes, cpu="cpu-serial", **kw)
    kw.setdefault("policy", "offload-only")
    return Machine(nodes=nodes, cpu="cpu-serial", offload=backend, **kw)


@pytest.fixture(
    params=CPU_BACKENDS + [pytest.param(b, marks=pytest.mark.gpu) for b in GPU_BACKENDS]
)
def backend(request) -> str:
    return request.param


@pytest.fixture(params=["fresh", "aged"])
def layout(request) -> str:
    """The nodes' free memory: in address order, or scattered as on an aged machine."""
    return request.param


@pytest.fixture
def machine(backend, layout):
    m = make_machine(backend, layout=layout, seed=7)
    yield m
    m.close()


@pytest.fixture
def m1():
    """A plain cpu-serial machine with two 16 MiB nodes."""
    m = make_machine()
    yield m
    m.close()


def fill(p, addr: int, length: int, seed: int) -> np.ndarray:
    """Write reproducible random bytes to ``[addr, addr+length)``; return them."""
    data = np.random.default_rng(seed).integers(0, 256, size=length, dtype=np.uint8)
    p.write(addr, data)
    return data


def pages(addr: int, length: int, step: int = PAGE_SIZE) -> list[int]:
    return list(range(addr, addr + length, step))


def install_plugin_dist(tmp_path, monkeypatch, package: str, source: str, entry_points: str):
    """Put a third-party distribution *package* on sys.path, found only through its
    ``offload.backends`` entry points (*entry_points*: ``name = module:attr`` lines).
    Returns a function that forgets its modules again."""
    import sys

    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(source)
    info = tmp_path / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[offload.backends]\n" + entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))

    def forget() -> None:
        for mod in [m for m in sys.modules if m.startswith(package)]:
            del sys.modules[mod]

    return forget
