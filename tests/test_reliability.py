"""Nothing lost under concurrency and faults: pins, munmaps, migrations from many threads,
and the stress command."""

import errno
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from offload import PAGE_SIZE, Machine
from offload.bench.stress import run_stress
from offload.cli import main

ROUNDS = 12


@pytest.mark.parametrize("policy", ["adaptive", "static:0.5", "autotune"])
def test_pins_munmaps_and_migrations_from_many_threads(backend, policy):
    off = None if backend == "cpu-serial" else backend
    with Machine(
        nodes="16M,16M,16M",
        cpu="cpu-batched:threads=2",
        offload=off,
        policy=policy if off else "adaptive",
    ) as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE, folio_size=4 * PAGE_SIZE)
        last = np.zeros(64, dtype=np.uint8)
        stop = threading.Event()
        errors = []

        def safe(fn):
            def run():
                try:
                    fn()
                except Exception as exc:
                    errors.append(repr(exc))
                    stop.set()

            return run

        @safe
        def writer():
            rng = np.random.default_rng(1)
            while not stop.is_set():
                i = int(rng.integers(64))
                v = int(rng.integers(1, 256))
                p.write(a + i * PAGE_SIZE, bytes([v]) * PAGE_SIZE)
                last[i] = v

        @safe
        def pinner():
            rng = np.random.default_rng(2)
            while not stop.is_set():
                with p.pin(a + int(rng.integers(64)) * PAGE_SIZE):
                    stop.wait(0.001)

        @safe
        def churner():  # maps, fills, moves and unmaps its own regions meanwhile
            rng = np.random.default_rng(3)
            while not stop.is_set():
                b = p.mmap(
                    16 * PAGE_SIZE,
                    node=int(rng.integers(3)),
                    folio_size=int(rng.choice([1, 16])) * PAGE_SIZE,
                )
                data = rng.integers(0, 256, 16 * PAGE_SIZE, dtype=np.uint8)
                p.write(b, data)
                r = p.move_pages(b + np.arange(16) * PAGE_SIZE, [int(rng.integers(3))] * 16)
                assert set(r.status) <= {0, 1, 2, -errno.ENOMEM}, r.status
                assert p.read(b, data.size) == data.tobytes()
                p.munmap(b, 16 * PAGE_SIZE)

        @safe
        def migrator():
            rng = np.random.default_rng(4)
            while not stop.is_set():
                assert p.migrate_pages([int(rng.integers(3))], [int(rng.integers(3))]) >= 0

        threads = [threading.Thread(target=f) for f in (writer, pinner, churner, migrator)]
        for t in threads:
            t.start()
        try:
            for r in range(ROUNDS):
                res = p.move_pages(a + np.arange(64) * PAGE_SIZE, [r % 3] * 64)
                assert set(res.status) <= {r % 3, -errno.EBUSY}, res.status
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        got = p.read_array(a, 64 * PAGE_SIZE).reshape(64, PAGE_SIZE)
        assert (got == last[:, None]).all(), "a write was lost"
        used = sum(n.nr_pages - n.free_pages for n in m.nodes)
        assert used == 64 and all((n.state == 0).all() for n in m.nodes)
        assert m.audit() == []


def test_stress_survives_its_faults():
    rep = run_stress(2.0, seed=7)
    assert rep["ok"], rep["errors"]
    assert rep["integrity_ok"] and not rep["errors"]
    ops = rep["operations"]
    assert ops["write"] > 0 and ops["move_pages"] > 0 and ops["migrate_pages"] > 0
    assert rep["pages_moved"] > 0
    f = rep["faults_injected"]
    assert f["allocation failures"] > 0 and f["folios the offload failed (all causes)"] > 0


def test_stress_command():
    r = CliRunner().invoke(main, ["bench", "stress", "--seconds", "1", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["seconds"] == 1.0
