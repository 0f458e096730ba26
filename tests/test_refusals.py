"""Promises of the docs that once broke: a bad number or a malformed document is one
clear error (exit 2, one ``Error:`` line naming it), an entry point that is no Migrator
is unavailable, a closed machine registers nothing, and ``audit()`` is right at any
moment, a migration in flight included."""

from __future__ import annotations

import copy
import json
import threading

import pytest
from click.testing import CliRunner
from conftest import fill, install_plugin_dist, pages

import offload
from offload import PAGE_SIZE, Machine, MachineClosed
from offload.cli import main
from offload.registry import Registry


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error(res, naming: str) -> None:
    """Exit 2, no traceback, exactly one ``Error:`` line, and it names *naming*."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert naming in errors[0], errors[0]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
@pytest.mark.parametrize(
    "args, naming",
    [
        (("bench", "stress", "--seconds"), "--seconds"),
        (("kernel-check", "--list", "--timeout"), "--timeout"),
    ],
)
def test_non_finite_numbers_on_the_command_line(args, naming, value):
    one_error(run(*args, value), naming)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("option", ["bandwidth", "timeout"])
def test_non_finite_backend_options(option, value):
    spec = f"dma-threads:{option}={value}"
    one_error(run("bench", "--backends", spec, "--sizes", "4K", "--total", "1M"), option)
    with pytest.raises(offload.SpecError, match=option):
        offload.registry.create(spec)


PLUGIN = """
from offload import Migrator, Option

class Knob(Migrator):
    name = "knob"
    options = {"gain": Option(float, min=0.5, help="gain"),
               "free": Option(float, help="no range at all")}

    def __init__(self, gain=1.0, free=0.0):
        self.gain, self.free = gain, free

    def offload_copy(self, batch):
        pass

class NotAMigrator:
    name = "not-a-migrator"

LIMIT = 3
"""


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    forget = install_plugin_dist(
        tmp_path,
        monkeypatch,
        "knobplugin",
        PLUGIN,
        "knob = knobplugin:Knob\n"
        "not-a-migrator = knobplugin:NotAMigrator\n"
        "a-constant = knobplugin:LIMIT\n",
    )
    offload.registry.refresh()
    yield
    offload.registry.refresh()
    forget()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("option", ["gain", "free"])
def test_a_third_party_float_option_refuses_non_finite(plugin_dist, option, value):
    with pytest.raises(offload.SpecError, match=option):
        Registry().create(f"knob:{option}={value}")
    assert Registry().create(f"knob:{option}=2.5").gain in (1.0, 2.5)


def test_an_entry_point_that_is_no_migrator_is_unavailable(plugin_dist):
    reg = Registry()
    for name, why in (("not-a-migrator", "not a subclass"), ("a-constant", "not a class")):
        info = reg.info(name)
        assert not info.available and why in info.reason, info
        with pytest.raises(offload.BackendUnavailable, match=why):
            reg.create(name)
    res = run("backends", "--json")
    assert res.exit_code == 0
    listed = {b["name"]: b for b in json.loads(res.output)}
    assert listed["not-a-migrator"]["available"] is False
    assert listed["knob"]["available"] is True


# -- bench compare on malformed documents ---------------------------------------------------
@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cmp") / "a.json"
    res = run(
        "bench",
        "--backends",
        "cpu-serial;cpu-batched:threads=1",
        "--sizes",
        "4K",
        "--total",
        "1M",
        "--repeat",
        "2",
        "-o",
        str(out),
    )
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


MALFORMED = {
    "results-not-a-list": lambda d: d.update(results={"cells": 1}),
    "results-a-string": lambda d: d.update(results="many"),
    "items-not-objects": lambda d: d.update(results=[1, "two", None]),
    "gbps-a-string": lambda d: d["results"][0].update(gbps="fast"),
    "gbps-null": lambda d: d["results"][0].update(gbps=None),
    "gbps-of-strings": lambda d: d["results"][0].update(gbps=["1.5", "2"]),
    "machine-a-string": lambda d: d.update(machine="my laptop"),
    "roofline-a-string": lambda d: d.update(roofline_gbps="12"),
    "no-results": lambda d: d.pop("results"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("side", ["a", "b"])
def test_compare_refuses_a_malformed_document(doc, tmp_path, name, side):
    bad = copy.deepcopy(doc)
    MALFORMED[name](bad)
    good_p, bad_p = tmp_path / "good.json", tmp_path / "bad.json"
    good_p.write_text(json.dumps(doc))
    bad_p.write_text(json.dumps(bad))
    args = (str(bad_p), str(good_p)) if side == "a" else (str(good_p), str(bad_p))
    for extra in ((), ("--json",)):
        res = run("bench", "compare", *args, *extra)
        one_error(res, "bad.json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_compare_refuses_non_json_numbers(doc, tmp_path, token):
    text = json.dumps(doc).replace('"roofline_gbps": ', f'"roofline_gbps": {token}, "_": ', 1)
    (tmp_path / "bad.json").write_text(text)
    (tmp_path / "good.json").write_text(json.dumps(doc))
    one_error(
        run("bench", "compare", str(tmp_path / "good.json"), str(tmp_path / "bad.json")), "bad.json"
    )


def test_compare_json_is_strict_when_nothing_spreads(doc, tmp_path):
    a, b = copy.deepcopy(doc), copy.deepcopy(doc)
    for r in a["results"]:
        r["gbps"] = [3.0, 3.0, 3.0]
    for r in b["results"]:
        r["gbps"] = [4.0, 4.0, 4.0]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    res = run("bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert out["cells"] and all(c["t"] == "no spread" for c in out["cells"])
    assert all(c["verdict"] == "faster" for c in out["cells"])
    assert "Infinity" not in res.output and "NaN" not in res.output


# -- registration after close, audit in flight ------------------------------------------------
def test_no_registration_after_close():
    m = Machine(nodes="8M,8M")
    m.close()
    from offload.backends.cpu_batched import CpuBatched

    mig = CpuBatched(threads=1)
    with pytest.raises(MachineClosed):
        m.offload.register(mig, "all")
    assert m.offload.active is None
    mig.close()


def test_audit_is_right_while_a_migration_copies():
    """A backend that audits from inside its copy (the destinations are allocated, not
    mapped yet) and a thread that audits all along: never a false leak."""
    seen: list[list[str]] = []

    class Auditing(offload.Migrator):
        name = "auditing"

        def offload_copy(self, batch):
            seen.append(m.audit())
            offload.devmem.copy_folios(batch[:])
            batch.copied[:] = True
            seen.append(m.audit())

    stop = threading.Event()
    found: list[list[str]] = []

    def watcher():
        # an audit every millisecond: back to back, the watcher would hold the machine's
        # lock nearly all the time and starve the migrations it watches
        while not stop.wait(0.001):
            found.append(m.audit())

    for policy in ("offload-only", "static:0.5"):
        m = Machine(nodes="16M,16M", offload=Auditing(), policy=policy, batch_pages=32)
        p = m.spawn()
        a = p.mmap(512 * PAGE_SIZE)
        t = p.mmap(2 << 20, folio_size=2 << 20)
        da, dt = fill(p, a, 512 * PAGE_SIZE, 1), fill(p, t, 2 << 20, 2)
        w = threading.Thread(target=watcher)
        w.start()
        try:
            for dst in (1, 0, 1):
                assert p.move_pages(pages(a, 512 * PAGE_SIZE), [dst] * 512).ret == 0
                assert p.move_pages([t], [dst]).ret == 0
        finally:
            stop.set()
            w.join()
            stop.clear()
        assert p.read(a, da.size) == da.tobytes() and p.read(t, dt.size) == dt.tobytes()
        assert m.engine.dst_pages == 0 and m.audit() == []
        m.close()
    assert len(seen) >= 8 and all(x == [] for x in seen), seen[:3]
    assert len(found) >= 3 and all(x == [] for x in found), next((x for x in found if x), found)


def test_audit_still_finds_a_real_leak():
    with Machine(nodes="8M,8M") as m:
        p = m.spawn()
        p.mmap(8 * PAGE_SIZE)
        m.nodes[1].alloc_folios(1, 0)  # a frame nobody maps, outside any migration
        problems = m.audit()
        assert problems and "leak" in problems[0]
        m.engine.dst_pages = 1  # as if a finished migration had forgotten a destination
        assert any("finished migrations" in x for x in m.audit())
        m.engine.dst_pages = 0
