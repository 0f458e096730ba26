"""Machine(verify=True): a lying or buggy backend cannot corrupt memory."""

import numpy as np
import pytest
from conftest import fill, pages

from offload import PAGE_SIZE, FolioBatch, Machine, Migrator
from offload.engine import verify_batch


class Liar(Migrator):
    """Marks every folio copied and copies only the even ones (and those badly)."""

    name = "liar"

    def offload_copy(self, batch):
        for i in range(0, len(batch), 2):
            n = 1 << int(batch.order[i])
            dst = batch.memory[int(batch.dst_node[i])]
            dst[batch.dst_pfn[i] : batch.dst_pfn[i] + n] = batch.memory[int(batch.src_node[i])][
                batch.src_pfn[i] : batch.src_pfn[i] + n
            ]
            dst[batch.dst_pfn[i], 7] ^= 0xFF  # one wrong byte
        batch.copied[:] = True


@pytest.mark.parametrize("policy", ["offload-only", "static:0.5", "adaptive", "autotune"])
def test_verify_catches_a_lying_plugin(policy):
    liar = Liar()
    with Machine(nodes="16M,16M", offload=liar, policy=policy, verify=True) as m:
        p = m.spawn()
        a = p.mmap(64 * PAGE_SIZE)
        t = p.mmap(1 << 21, folio_size=1 << 21)
        da, dt = fill(p, a, 64 * PAGE_SIZE, 1), fill(p, t, 1 << 21, 2)
        r = p.move_pages(pages(a, 64 * PAGE_SIZE) + [t], [1] * 65)
        assert r.ret == 0
        assert p.read(a, da.size) == da.tobytes() and p.read(t, dt.size) == dt.tobytes()
        assert liar.verify_failures == liar.folios_migrated
        # the cost model may leave a slow plugin idle; the other policies give it folios
        assert liar.folios_migrated > 0 or policy == "adaptive"
        assert m.cpu.verify_failures == 0
        assert m.engine.stats.verify_failures == liar.verify_failures


def test_without_verify_the_lie_gets_through():
    liar = Liar()
    with Machine(nodes="16M,16M", offload=liar, policy="offload-only") as m:
        p = m.spawn()
        a = p.mmap(4 * PAGE_SIZE)
        data = fill(p, a, 4 * PAGE_SIZE, 1)
        p.move_pages(pages(a, 4 * PAGE_SIZE), [1] * 4)
        assert p.read(a, data.size) != data.tobytes()  # which is why verify exists


def test_verify_blames_a_bad_cpu_path():
    liar = Liar()
    with Machine(nodes="16M,16M", cpu=liar, verify=True) as m:
        p = m.spawn()
        a = p.mmap(8 * PAGE_SIZE)
        data = fill(p, a, 8 * PAGE_SIZE, 3)
        assert p.move_pages(pages(a, 8 * PAGE_SIZE), [1] * 8).ret == 0
        assert p.read(a, data.size) == data.tobytes()
        assert liar.verify_failures == 8


def test_verify_batch_finds_single_bytes():
    mem = {
        0: np.random.default_rng(0).integers(0, 256, (64, PAGE_SIZE), dtype=np.uint8),
        1: np.zeros((64, PAGE_SIZE), np.uint8),
    }
    b = FolioBatch([0, 0, 0], [0, 4, 8], [1, 1, 1], [0, 4, 8], [2, 2, 0], memory=mem)
    mem[1][:12] = mem[0][:12]
    assert not verify_batch(b).any()
    mem[1][6, 4095] ^= 1
    assert verify_batch(b).tolist() == [False, True, False]


def test_verify_batch_scattered_folios():
    rng = np.random.default_rng(1)
    mem = {
        0: rng.integers(0, 256, (512, PAGE_SIZE), dtype=np.uint8),
        1: np.zeros((512, PAGE_SIZE), np.uint8),
    }
    src = rng.permutation(200)[:100]
    dst = rng.permutation(200)[:100] + 256
    b = FolioBatch([0] * 100, src, [1] * 100, dst, [0] * 100, memory=mem)
    mem[1][dst] = mem[0][src]
    assert not verify_batch(b).any()
    mem[1][dst[[3, 77]], 100] += 1
    assert np.flatnonzero(verify_batch(b)).tolist() == [3, 77]


STRAY_PLUGIN = '''
import numpy as np
from offload import Migrator


class StrayDma(Migrator):
    """Copies every folio right, then scribbles on the source of the first one."""

    name = "stray-dma"

    def offload_copy(self, batch):
        for i in range(len(batch)):
            src = batch.memory[int(batch.src_node[i])]
            dst = batch.memory[int(batch.dst_node[i])]
            s, d, n = int(batch.src_pfn[i]), int(batch.dst_pfn[i]), 1 << int(batch.order[i])
            dst[d : d + n] = src[s : s + n]
        batch.memory[int(batch.src_node[0])][int(batch.src_pfn[0]), 0] ^= 0xFF
        batch.copied[:] = True
'''


def test_bench_verify_reports_stray_writes_per_row_and_exits_3(tmp_path, monkeypatch):
    """offload bench --verify with a backend that writes outside its batch: the engine
    undoes each stray write, every row still verifies, the row says how many pages were
    caught, and the command exits 3 after printing what it measured."""
    import json

    from click.testing import CliRunner
    from conftest import install_plugin_dist

    import offload
    from offload.cli import main

    forget = install_plugin_dist(
        tmp_path, monkeypatch, "strayplugin", STRAY_PLUGIN, "stray-dma = strayplugin:StrayDma\n"
    )
    offload.registry.refresh()
    try:
        args = [
            "bench",
            "--backends",
            "cpu-serial;stray-dma",
            "--sizes",
            "4K,64K",
            "--total",
            "1M",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--verify",
        ]
        r = CliRunner().invoke(main, [*args, "--json"])
        assert r.exit_code == 3, r.output
        rows = {(x["backend"], x["folio_size"]): x for x in json.loads(r.stdout)["results"]}
        assert all(x["verified"] for x in rows.values())
        assert rows["stray-dma", 4096]["stray_writes"] >= 1
        assert rows["cpu-serial", 4096]["stray_writes"] == 0
        assert "wrote outside its batch" in r.stderr and "stray-dma" in r.stderr
        r = CliRunner().invoke(main, ["--width", "200", *args, "--details"])
        assert r.exit_code == 3 and "stray writes" in r.stdout
    finally:
        offload.registry.refresh()
        forget()
