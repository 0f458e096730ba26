"""The scheduler: policies, reachability, observability, autotune's convergence."""

import numpy as np
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, Machine, SpecError
from offload.autotune import Autotune
from offload.backends.dcbm import DmaThreads, Faults
from offload.scheduler import parse_policy


@pytest.mark.parametrize(
    "text, kind, f, thr",
    [
        ("cpu-only", "cpu-only", 1.0, 0),
        ("offload-only", "offload-only", 0.0, 0),
        ("static:0.25", "static", 0.25, 0),
        ("threshold:64K", "threshold", 0.0, 65536),
        ("adaptive", "adaptive", 0.5, 0),
        ("autotune", "autotune", 0.5, 0),
        ("model", "adaptive", 0.5, 0),  # its name before it became adaptive
    ],
)
def test_policies_parse(text, kind, f, thr):
    p = parse_policy(text)
    assert (p.kind, p.cpu_fraction, p.threshold) == (kind, f, thr)


@pytest.mark.parametrize(
    "bad",
    ["static", "static:1.5", "static:x", "threshold:", "fast", "threshold:4Q", "cpu-only:1", 3],
)
def test_bad_policies(bad):
    with pytest.raises(SpecError, match="policy"):
        Machine(nodes="8M,8M", policy=bad)


def split_of(policy, sizes):
    mig = DmaThreads(channels=2)
    with Machine(nodes="32M,32M", offload=mig, policy=policy) as m:
        p = m.spawn()
        entries = []
        for fs in sizes:
            a = p.mmap(4 * fs, folio_size=fs)
            fill(p, a, 4 * fs, fs)
            entries += pages(a, 4 * fs, fs)
        assert p.move_pages(entries, [1] * len(entries)).ret == 0
        st = m.offload.stats
    mig.close()
    return st


def test_static_and_threshold_splits():
    # one batch of 4 pages + a THP, then three THP batches: whole folios cannot give each
    # batch 25%, so the shortfall carries over and the CPU ends up with one THP of four
    st = split_of("static:0.25", [PAGE_SIZE, 1 << 21])
    assert st["bytes_cpu"] == 1 << 21 and st["bytes_offload"] == (3 << 21) + 4 * PAGE_SIZE
    st = split_of("static:0.75", [PAGE_SIZE, 1 << 21])
    assert st["bytes_cpu"] == 3 << 21 and st["bytes_offload"] == (1 << 21) + 4 * PAGE_SIZE
    st = split_of("static:0.5", [PAGE_SIZE])  # one batch of 4 pages: 2 and 2
    assert st["bytes_cpu"] == st["bytes_offload"] == 2 * PAGE_SIZE
    st = split_of("threshold:64K", [PAGE_SIZE, 16 * PAGE_SIZE, 1 << 21])
    assert st["bytes_cpu"] == 4 * PAGE_SIZE  # only folios below 64K stay on the CPU
    assert st["bytes_offload"] == 4 * 16 * PAGE_SIZE + (4 << 21)
    st = split_of("cpu-only", [PAGE_SIZE])
    assert st["bytes_offload"] == 0 and st["bytes_cpu"] == 4 * PAGE_SIZE
    assert split_of("offload-only", [PAGE_SIZE])["bytes_cpu"] == 0


def simulate(ada: Autotune, batches: int, cpu_gbps: float, off_gbps: float, nbytes: int):
    """Drive *ada* as the scheduler does, with copy times from fixed speeds (no clock):
    the CPU copies its share at *cpu_gbps*, the offload the rest at *off_gbps*, at
    once; a batch takes as long as the slower side."""
    splits = []
    for _ in range(batches):
        f = ada.fraction()
        splits.append(f)
        b_cpu = f * nbytes
        b_off = nbytes - b_cpu
        t_cpu = b_cpu / (cpu_gbps * 1e9)
        t_off = b_off / (off_gbps * 1e9)
        ada.learn(
            nbytes,
            max(t_cpu, t_off),
            cpu_gbps if b_cpu else 0.0,
            off_gbps if b_off else 0.0,
            True,
        )
    return splits


def test_autotune_converges_to_the_balanced_split():
    # the CPU path at 0.25 GB/s, the offload engine at 0.75 GB/s: both finish together
    # when the CPU takes 25% of the bytes
    ada = Autotune()
    splits = simulate(ada, 12, 0.25, 0.75, 64 << 20)
    best = 0.25
    warm = 2 * 3  # it measures each of its three modes twice
    assert splits[:warm:3] == [0.5, pytest.approx(best, abs=0.01)], splits  # first correction
    # after its probes, every batch runs at the best split
    assert all(abs(f - best) <= 0.01 for f in splits[warm:]), splits
    assert ada.mode == "split"
    assert ada.gbps["split"] > ada.gbps["offload"] > ada.gbps["cpu"]


def test_autotune_runs_end_to_end_with_two_throttled_engines():
    """The same two speeds through a machine: every byte arrives and the policy records
    its choices (its convergence is the simulation's to check: no clock is asserted)."""
    cpu = DmaThreads(channels=1, bandwidth=0.25)
    off = DmaThreads(channels=1, bandwidth=0.75)
    with Machine(nodes="64M,64M", cpu=cpu, offload=off, policy="autotune", batch_pages=1024) as m:
        p = m.spawn()
        a = p.mmap(32 << 20, folio_size=16 * PAGE_SIZE)
        data = fill(p, a, 32 << 20, 3)
        assert p.move_pages(pages(a, 32 << 20, 16 * PAGE_SIZE), [1] * 512).ret == 0
        st = m.offload.stats
        assert p.read(a, data.size) == data.tobytes()
        assert m.audit() == []
    cpu.close()
    off.close()
    assert len(st["splits"]) == 8 and all(0.0 <= f <= 1.0 for f in st["splits"])
    assert st["splits"][:3] == [0.5, 1.0, 0.0]  # it measures split, CPU, offload in turn
    assert st["autotune"]["mode"] in ("split", "cpu", "offload")


def test_autotune_drops_a_failing_offload():
    off = DmaThreads(channels=2, faults=Faults(fail_every=1))
    with Machine(nodes="32M,32M", offload=off, policy="autotune", batch_pages=16) as m:
        p = m.spawn()
        a = p.mmap(2 << 20)
        data = fill(p, a, 2 << 20, 4)
        assert p.move_pages(pages(a, 2 << 20), [1] * 512).ret == 0
        assert p.read(a, data.size) == data.tobytes()
        st = m.offload.stats
    off.close()
    assert st["autotune_by_folio_size"][PAGE_SIZE]["mode"] == "cpu"
    assert st["offload_gbps"] == 0.0  # failed offloads were never measured
    after_warmup = st["splits"][6:]
    assert len(after_warmup) == 26 and np.mean(np.array(after_warmup) == 1.0) >= 0.9


def test_offload_stats_are_observable():
    st = split_of("adaptive", [PAGE_SIZE])
    assert {
        "batches",
        "bytes_cpu",
        "bytes_offload",
        "cpu_gbps",
        "offload_gbps",
        "splits",
        "policy",
        "cpu_fraction",
    } <= set(st)
    assert st["policy"] == "adaptive" and st["batches"] >= 1


def test_stats_show_each_migrators_counters():
    # static:0.5 over 64 folios: each side marks 32, and the machine (not the plugin)
    # keeps the counts, visible through m.offload.stats
    mig = DmaThreads(channels=2)
    with Machine(
        nodes="16M,16M", cpu="cpu-batched:threads=1", offload=mig, policy="static:0.5"
    ) as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        data = fill(p, a, 64 * PAGE_SIZE, 5)
        assert p.move_pages(pages(a, 64 * PAGE_SIZE), [1] * 64).ret == 0
        assert p.read(a, data.size) == data.tobytes()
        st = m.offload.stats["migrators"]
    mig.close()
    assert st["offload"]["spec"].startswith("dma-threads")
    assert st["offload"]["folios_migrated"] == 32 and st["offload"]["folios_failures"] == 0
    assert st["cpu"]["spec"] == "cpu-batched:threads=1" and st["cpu"]["folios_migrated"] == 32
