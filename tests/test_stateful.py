"""A hypothesis state machine over the whole system, checked against a reference model.

Profiles: ``ci`` (default, quick) and ``long`` (HYPOTHESIS_PROFILE=long) for local runs.
"""

import errno
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from offload import MPOL_MF_MOVE_ALL, PAGE_SIZE, Machine
from offload.backends.dcbm import DmaThreads, Faults

settings.register_profile(
    "ci",
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NODES = 3
ALLOWED = {-errno.EBUSY, -errno.ENOMEM, -errno.EACCES}


class Region:
    def __init__(self, proc, addr, npages, folio_pages, shared):
        self.proc, self.addr, self.npages = proc, addr, npages
        self.folio_pages, self.shared = folio_pages, shared
        self.model = np.zeros(npages * PAGE_SIZE, dtype=np.uint8)  # the bytes
        self.node = np.full(npages, -1)  # where each page was last seen (-1 unknown)


class System(RuleBasedStateMachine):
    regions = Bundle("regions")
    pins = Bundle("pins")

    @initialize(
        policy=st.sampled_from(["adaptive", "offload-only", "static:0.5", "cpu-only", "autotune"]),
        cpu=st.sampled_from(["cpu-serial", "cpu-batched:threads=2"]),
        batch=st.sampled_from([1, 8, 64, 512]),
    )
    def start(self, policy, cpu, batch):
        self.faults = Faults()
        self.dma = DmaThreads(channels=3, timeout=0.05, faults=self.faults)
        self.m = Machine(nodes=",".join(["6M"] * NODES), cpu=cpu, policy=policy, batch_pages=batch)
        self.p = self.m.spawn(uid=1000)
        self.root = self.m.spawn(uid=0)
        self.live_pins = []
        self.live_regions = []

    def teardown(self):
        for pin in self.live_pins:
            pin.release()
        self.m.close()
        self.dma.close()

    @rule(
        target=regions,
        npages=st.integers(1, 24),
        fp=st.sampled_from([1, 4, 512]),
        node=st.integers(0, NODES - 1),
        shared=st.booleans(),
        populate=st.booleans(),
    )
    def mmap(self, npages, fp, node, shared, populate):
        npages = -(-npages // fp) * fp
        try:
            a = self.p.mmap(
                npages * PAGE_SIZE,
                node=node,
                folio_size=fp * PAGE_SIZE,
                shared=shared,
                populate=populate,
            )
        except OSError as e:
            assert e.errno == errno.ENOMEM
            return None
        r = Region(self.p, a, npages, fp, shared)
        self.live_regions.append(r)
        if shared:
            self.p.share(a, npages * PAGE_SIZE, into=self.root)
        return r

    @rule(r=regions, data=st.data())
    def write(self, r, data):
        if r is None:
            return
        off = data.draw(st.integers(0, r.npages * PAGE_SIZE - 1))
        n = data.draw(st.integers(1, min(3 * PAGE_SIZE, r.npages * PAGE_SIZE - off)))
        buf = np.random.default_rng(off * 7 + n).integers(0, 256, n, dtype=np.uint8)
        try:
            r.proc.write(r.addr + off, buf)
        except OSError as e:
            assert e.errno == errno.ENOMEM
            return
        r.model[off : off + n] = buf

    @rule(r=regions, data=st.data())
    def move(self, r, data):
        if r is None:
            return
        idx = data.draw(st.lists(st.integers(0, r.npages - 1), min_size=1, max_size=30))
        target = data.draw(st.integers(0, NODES - 1))
        move_all = r.shared and data.draw(st.booleans())
        caller = self.root if move_all else r.proc
        res = caller.move_pages(
            [r.addr + i * PAGE_SIZE for i in idx],
            [target] * len(idx),
            flags=MPOL_MF_MOVE_ALL if move_all else 2,
            pid=r.proc.pid if move_all else 0,
        )
        for s in res.status:
            assert s == target or s in ALLOWED | {-errno.ENOENT, -errno.EFAULT}, s
            if s == -errno.EACCES:
                assert r.shared and not move_all
        assert res.ret == sum(s != target for s in res.status)
        where = caller.move_pages(
            [r.addr + i * PAGE_SIZE for i in idx], None, pid=r.proc.pid if move_all else 0
        ).status
        for s, w in zip(res.status, where):
            if s == target:
                assert w == target  # what it reported is where the page is

    @rule(old=st.sets(st.integers(0, NODES - 1), min_size=1), new=st.integers(0, NODES - 1))
    def migrate(self, old, new):
        assert self.p.migrate_pages(sorted(old), [new]) >= 0

    @rule(target=pins, r=regions, data=st.data())
    def pin(self, r, data):
        if r is None:
            return None
        i = data.draw(st.integers(0, r.npages - 1))
        try:
            pin = r.proc.pin(r.addr + i * PAGE_SIZE)
        except OSError as e:
            assert e.errno in (errno.ENOMEM, errno.EFAULT)
            return None
        self.live_pins.append(pin)
        return pin

    @rule(pin=consumes(pins))
    def unpin(self, pin):
        if pin is not None and pin in self.live_pins:
            self.live_pins.remove(pin)
            pin.release()

    @rule(r=consumes(regions))
    def munmap(self, r):
        if r is None:
            return
        r.proc.munmap(r.addr, r.npages * PAGE_SIZE)
        self.live_regions.remove(r)

    @rule(
        on=st.booleans(), fail=st.sampled_from([0, 2, 5]), hang=st.booleans(), reorder=st.booleans()
    )
    def offload(self, on, fail, hang, reorder):
        self.faults.fail_every, self.faults.reorder = fail, reorder
        self.faults.hang = {1} if hang else set()
        active = self.m.offload.active
        if on and active is None:
            self.m.offload.register(self.dma)
        elif not on and active is not None:
            self.m.offload.unregister(self.dma)

    @rule(node=st.integers(0, NODES - 1), n=st.integers(1, 3))
    def fail_allocations(self, node, n):
        self.m.nodes[node].fail_allocs = n

    @precondition(lambda self: hasattr(self, "m"))
    @invariant()
    def bytes_are_the_last_written(self):
        for r in self.live_regions:
            assert r.proc.read(r.addr, r.model.size) == r.model.tobytes()

    @precondition(lambda self: hasattr(self, "m"))
    @invariant()
    def accounting(self):
        used = sum(n.nr_pages - n.free_pages for n in self.m.nodes)
        present = sum(int((o.pfn >= 0).sum()) for o in self.m.rmap.objects.values())
        orphans = sum(
            1 << int(n.order[h])
            for n in self.m.nodes
            for h in np.flatnonzero((n.pins > 0) & (n.obj == -1))
        )
        assert used == present + orphans
        assert all((n.state == 0).all() for n in self.m.nodes)
        # the machine's own check: among others, free frames hold no owner, pins,
        # sharers or state (an allocation takes them as they are)
        assert self.m.audit() == []


TestSystem = System.TestCase
