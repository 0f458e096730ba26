"""Backend registry: specs, options, lazy entry-point discovery of a real plugin."""

import sys

import pytest
from conftest import install_plugin_dist

from offload import PAGE_SIZE, BackendUnavailable, Machine, SpecError, UnknownBackend, registry
from offload.registry import Registry, parse_spec


def test_builtins_are_listed_and_available():
    avail = registry.available()
    for name in ("cpu-serial", "cpu-batched"):
        assert avail[name].available and avail[name].name == name


@pytest.mark.parametrize(
    "spec, name, opts",
    [
        ("cpu-serial", "cpu-serial", {}),
        (" cpu-batched:threads=2 ", "cpu-batched", {"threads": "2"}),
        ("x:a=1,b=two", "x", {"a": "1", "b": "two"}),
    ],
)
def test_parse_spec(spec, name, opts):
    assert parse_spec(spec) == (name, opts)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "missing backend name"),
        (":threads=1", "missing backend name"),
        ("cpu-batched:", "key=value"),
        ("cpu-batched:threads", "key=value"),
        ("cpu-batched:threads=1,threads=2", "twice"),
        ("cpu-batched:threads=0", "out of range"),
        ("cpu-batched:threads=lots", "not a valid int"),
        ("cpu-batched:speed=9", "unknown option"),
        ("cpu-serial:threads=2", "unknown option"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(SpecError, match=match):
        registry.create(spec)


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(UnknownBackend, match="cpu-serial"):
        registry.create("warp-drive")
    with pytest.raises(SpecError):
        registry.create(42)


def test_created_backend_carries_its_options():
    b = registry.create("cpu-batched:threads=3")
    assert b.threads == 3 and b.spec == "cpu-batched:threads=3"
    b.close()


PLUGIN = """
from offload import Migrator, Option

class Fake(Migrator):
    name = "fake-dma"
    options = {"lanes": Option(int, min=1, max=4, help="lanes")}
    calls = 0

    def __init__(self, lanes=1):
        super().__init__()
        self.lanes = lanes

    def offload_copy(self, batch):
        Fake.calls += 1
        for i in range(len(batch)):
            n = 1 << int(batch.order[i])
            src = batch.memory[int(batch.src_node[i])]
            dst = batch.memory[int(batch.dst_node[i])]
            dst[batch.dst_pfn[i]:batch.dst_pfn[i] + n] = src[batch.src_pfn[i]:batch.src_pfn[i] + n]
            batch.copied[i] = True

class NoHardware(Fake):
    name = "no-hw"

    @classmethod
    def available(cls):
        return False, "no DMA engine found"
"""


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A third-party distribution on sys.path, found only through its entry points."""
    forget = install_plugin_dist(
        tmp_path,
        monkeypatch,
        "fakeplugin",
        PLUGIN,
        "fake-dma = fakeplugin:Fake\n"
        "no-hw = fakeplugin:NoHardware\n"
        "broken = fakeplugin_missing.module:Thing\n",
    )
    yield
    forget()


def test_plugin_discovered_lazily_and_used(plugin_dist):
    reg = Registry()
    assert "fakeplugin" not in sys.modules
    names = reg.names()
    assert {"fake-dma", "no-hw", "broken", "cpu-serial"} <= set(names)
    assert "fakeplugin" not in sys.modules  # listing names imports nothing
    avail = reg.available()
    assert avail["fake-dma"].available
    assert not avail["no-hw"].available and "no DMA engine" in avail["no-hw"].reason
    assert not avail["broken"].available and "fakeplugin_missing" in avail["broken"].reason
    with pytest.raises(BackendUnavailable, match="no DMA engine"):
        reg.create("no-hw")
    with pytest.raises(BackendUnavailable, match="fakeplugin_missing"):
        reg.create("broken")
    with pytest.raises(SpecError, match="out of range"):
        reg.create("fake-dma:lanes=9")
    mig = reg.create("fake-dma:lanes=2")
    assert mig.lanes == 2
    with Machine(nodes="8M,8M", offload=mig, policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        p.write(a, b"plugin" * 100)
        assert p.move_pages([a], [1]).status == [1]
        assert p.read(a, 600) == b"plugin" * 100
        assert type(mig).calls == 1 and mig.folios_migrated == 1


def test_default_registry_sees_plugin_after_refresh(plugin_dist):
    registry.refresh()
    try:
        assert registry.info("fake-dma").available
    finally:
        registry.refresh()


def test_manual_registration():
    reg = Registry()
    from offload.backends.cpu_serial import CpuSerial

    reg.register("my-serial", CpuSerial)
    assert reg.create("my-serial").name == "cpu-serial"
    with pytest.raises(SpecError):
        reg.register("bad:name", CpuSerial)


def test_option_defaults_come_from_the_signature_once():
    from offload import registry
    from offload.migrator import Migrator, Option, option_defaults

    assert registry.defaults("dma-threads")["channels"] == 1
    assert registry.defaults("dma-threads")["timeout"] == 10.0

    class Kw(Migrator):
        name = "kw"
        options = {"lanes": Option(int, default=3, min=1, max=4), "x": Option(int)}

        def __init__(self, **kw):
            self.kw = kw

        def offload_copy(self, batch):
            pass

    assert option_defaults(Kw) == {"lanes": 3, "x": None}
    reg = registry.Registry(group="no-such-group")
    reg.register("kw", Kw)
    assert reg.create("kw").kw == {"lanes": 3}
    assert reg.create("kw:lanes=2,x=1").kw == {"lanes": 2, "x": 1}
