"""The cupy backend: device nodes, pinned host nodes, both copy paths (GPU only)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import GPU_OK, fill, pages

from offload import PAGE_SIZE, BackendUnavailable, Machine, registry
from offload.testing import check_migrator


def test_importing_never_imports_cupy():
    code = (
        "import sys, offload, offload.backends, offload.backends.dcbm, offload.backends.dcbm.cupy_engine, offload.bench.cli;"
        "offload.registry.available();"
        "print('cupy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cupy_is_listed_with_a_reason_when_unusable():
    info = registry.available()["cupy"]
    assert info.available == GPU_OK
    if not GPU_OK:
        assert info.reason
        with pytest.raises(BackendUnavailable, match="device nodes need CuPy"):
            Machine(nodes="dram:8M,device:8M")


@pytest.mark.parametrize(
    "spec",
    [
        "cupy:channels=4",
        "cupy:channels=2,path=kernel",
        "cupy:channels=3,path=memcpy,coalesce=false",
    ],
)
@pytest.mark.gpu
def test_cupy_conformance(spec):
    check_migrator(lambda: registry.create(spec))


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["memcpy", "kernel"])
@pytest.mark.parametrize("folio", [PAGE_SIZE, 16 * PAGE_SIZE, 1 << 21])
def test_dram_to_device_and_back(path, folio):
    with Machine(
        nodes="dram:32M,device:32M", offload=f"cupy:channels=4,path={path}", policy="offload-only"
    ) as m:
        assert m.nodes[1].kind == "device"
        p = m.spawn()
        a = p.mmap(8 * folio, folio_size=folio)
        data = fill(p, a, 8 * folio, 11)
        r = p.move_pages(pages(a, 8 * folio, folio), [1] * 8)
        assert r.ret == 0 and r.status == [1] * 8
        assert p.read(a, data.size) == data.tobytes()  # read from GPU memory
        p.write(a + 5, b"on the device")
        assert p.migrate_pages([1], [0]) == 0
        assert p.read(a + 5, 13) == b"on the device"
        assert m.offload.active.folios_migrated == 16


@pytest.mark.gpu
def test_device_nodes_without_offload_fall_back_to_runtime_copies():
    with Machine(nodes="dram:8M,device:8M") as m:
        p = m.spawn()
        a = p.mmap(4 * PAGE_SIZE)
        data = fill(p, a, 4 * PAGE_SIZE, 12)
        assert p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4).status == [1] * 4
        assert p.read(a, data.size) == data.tobytes()


@pytest.mark.gpu
def test_first_touch_on_a_device_node():
    with Machine(nodes="dram:8M,device:8M", offload="cupy") as m:
        p = m.spawn()
        a = p.mmap(1 << 21, node=1, folio_size=1 << 21, populate=False)
        assert p.read(a, 8) == bytes(8)
        p.write(a + 4096, np.arange(100, dtype=np.uint8))
        assert p.read(a + 4096, 100) == bytes(range(100))
