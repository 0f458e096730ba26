"""Accesses and migrations from several threads: no lost write, no torn read."""

import errno
import threading

import numpy as np
import pytest
from conftest import make_machine

from offload import PAGE_SIZE

ROUNDS = 15


@pytest.mark.parametrize("folio_size", [PAGE_SIZE, 16 * PAGE_SIZE, 1 << 21])
def test_writers_and_readers_during_repeated_migrations(backend, folio_size):
    with make_machine(backend, nodes="16M,16M") as m:
        p = m.spawn()
        length = max(64 * PAGE_SIZE, 2 * folio_size)
        a = p.mmap(length, folio_size=folio_size)
        npages = length // PAGE_SIZE
        last = np.zeros(npages, dtype=np.int64)
        stop = threading.Event()
        errors = []

        def writer(owned, seed):
            rng = np.random.default_rng(seed)
            v = 0
            while not stop.is_set():
                i = int(rng.choice(owned))
                v = v % 255 + 1
                p.write(a + i * PAGE_SIZE, bytes([v]) * PAGE_SIZE)
                last[i] = v

        def reader(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                i = int(rng.integers(npages))
                page = p.read_array(a + i * PAGE_SIZE, PAGE_SIZE)
                if (page != page[0]).any():
                    errors.append(f"torn read of page {i}")

        idx = np.arange(npages)
        threads = [threading.Thread(target=writer, args=(idx[k::2], k)) for k in range(2)]
        threads.append(threading.Thread(target=reader, args=(9,)))
        for t in threads:
            t.start()
        entries = list(range(a, a + length, PAGE_SIZE))
        try:
            for r in range(ROUNDS):
                res = p.move_pages(entries, [(r + 1) % 2] * npages)
                assert res.ret == 0 and set(res.status) == {(r + 1) % 2}
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors
        got = p.read_array(a, length).reshape(npages, PAGE_SIZE)
        assert (got == last[:, None].astype(np.uint8)).all(), "a write was lost"
        total = sum(n.nr_pages - n.free_pages for n in m.nodes)
        assert total == npages  # nothing leaked, nothing duplicated


def test_concurrent_move_pages_and_migrate_pages_on_the_same_pages(backend):
    with make_machine(backend, nodes="16M,16M,16M") as m:
        p = m.spawn()
        q = m.spawn(uid=0)
        a = p.mmap(128 * PAGE_SIZE, shared=True)
        data = np.random.default_rng(1).integers(0, 256, 128 * PAGE_SIZE, dtype=np.uint8)
        p.write(a, data)
        b = p.share(a, 64 * PAGE_SIZE, into=q)
        entries = list(range(a, a + 128 * PAGE_SIZE, PAGE_SIZE))
        failures = []

        def mover(target):
            for _ in range(ROUNDS):
                r = p.move_pages(entries, [target] * 128)
                # shared pages need MOVE_ALL: refused unless already on the target
                if not set(r.status[:64]) <= {-errno.EACCES, target} or set(r.status[64:]) != {
                    target
                }:
                    failures.append(r.status)

        def migrator():
            for i in range(ROUNDS):
                q.migrate_pages([0, 1, 2], [(i % 3)])

        ts = [threading.Thread(target=mover, args=(t,)) for t in (1, 2)]
        ts.append(threading.Thread(target=migrator))
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not failures
        assert p.read(a, data.size) == data.tobytes()
        assert q.read(b, 64 * PAGE_SIZE) == data[: 64 * PAGE_SIZE].tobytes()
        assert sum(n.nr_pages - n.free_pages for n in m.nodes) == 128
