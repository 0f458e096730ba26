"""Bad input everywhere a user can reach: a clear error that names the problem, and the
machine left exactly as it was."""

import errno

import numpy as np
import pytest
from click.testing import CliRunner

from offload import MPOL_MF_MOVE, PAGE_SIZE, BadArgument, Machine, OffloadError, registry
from offload.cli import main


@pytest.fixture
def world():
    m = Machine(nodes="8M,8M")
    p = m.spawn(uid=1000)
    q = m.spawn(uid=0)
    a = p.mmap(4 * PAGE_SIZE)
    s = p.mmap(4 * PAGE_SIZE, shared=True)
    p.write(a, b"keep me")
    yield m, p, q, a, s
    m.close()


def snapshot(m, p):
    return (
        [n.free_pages for n in m.nodes],
        p.mappings,
        dict(m.vmstat),
        [n.state.copy() for n in m.nodes],
        p.read(p.mappings[0][0], 7),
    )


# (call, exception type or errno, text the message must contain)
CASES = [
    (lambda m, p, q, a, s: p.mmap(0), BadArgument, "length"),
    (lambda m, p, q, a, s: p.mmap(-PAGE_SIZE), BadArgument, "length"),
    (lambda m, p, q, a, s: p.mmap(1 << 60), errno.ENOMEM, ""),
    (lambda m, p, q, a, s: p.mmap(PAGE_SIZE, folio_size=5000), BadArgument, "folio_size"),
    (lambda m, p, q, a, s: p.mmap(PAGE_SIZE, node=7), BadArgument, "node"),
    (lambda m, p, q, a, s: p.mmap(PAGE_SIZE, node="0"), TypeError, "node"),
    (lambda m, p, q, a, s: p.mmap(PAGE_SIZE, shared="yes"), TypeError, "shared"),
    (lambda m, p, q, a, s: p.mmap(2.5), TypeError, "length"),
    (lambda m, p, q, a, s: p.write(a, 123), TypeError, "data"),
    (lambda m, p, q, a, s: p.write(a + 3 * PAGE_SIZE, b"x" * (PAGE_SIZE + 1)), errno.EFAULT, ""),
    (lambda m, p, q, a, s: p.write(-1, b"x"), BadArgument, "addr"),
    (lambda m, p, q, a, s: p.read(a, -5), BadArgument, "n"),
    (lambda m, p, q, a, s: p.read(a, "5"), TypeError, "n"),
    (lambda m, p, q, a, s: p.munmap(a + 1, PAGE_SIZE), BadArgument, "addr"),
    (lambda m, p, q, a, s: p.munmap(a, 0), BadArgument, "length"),
    (lambda m, p, q, a, s: p.share(a, PAGE_SIZE, into=q), errno.EINVAL, "private"),
    (lambda m, p, q, a, s: p.share(s, PAGE_SIZE, into="q"), TypeError, "into"),
    (lambda m, p, q, a, s: p.share(s, 64 * PAGE_SIZE, into=q), errno.EFAULT, ""),
    (lambda m, p, q, a, s: p.pin(a + 64 * PAGE_SIZE), errno.EFAULT, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [1], flags=1), errno.EINVAL, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [1], flags=4), errno.EPERM, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [1], pid=99), errno.ESRCH, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [1], pid=q.pid), errno.EPERM, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [2]), errno.ENODEV, ""),
    (lambda m, p, q, a, s: p.move_pages([a] * 3, [1] * 2), BadArgument, "nodes"),
    (lambda m, p, q, a, s: p.move_pages([[a]], [1]), TypeError, "pages"),
    (lambda m, p, q, a, s: p.move_pages(np.array([a], dtype=float), [1]), TypeError, "pages"),
    (lambda m, p, q, a, s: p.move_pages(None, [1]), TypeError, "pages"),
    (lambda m, p, q, a, s: p.move_pages(a, [1]), TypeError, "pages"),
    (lambda m, p, q, a, s: p.move_pages([a], 1), TypeError, "nodes"),
    (lambda m, p, q, a, s: p.move_pages([a], np.int64(1)), TypeError, "nodes"),
    (lambda m, p, q, a, s: p.move_pages([a, 2**80], [1, 1]), TypeError, "pages"),
    (lambda m, p, q, a, s: p.write(a, np.array([object()])), TypeError, "data"),
    (lambda m, p, q, a, s: p.read(a, 1 << 50), errno.EFAULT, ""),
    (lambda m, p, q, a, s: p.read(a + 4 * PAGE_SIZE, 1 << 40), errno.EFAULT, ""),
    (lambda m, p, q, a, s: p.move_pages([a], [1], flags="move"), TypeError, "flags"),
    (lambda m, p, q, a, s: p.move_pages([a], [1], pid=-1), BadArgument, "pid"),
    (
        lambda m, p, q, a, s: p.move_pages([a] * 10**6, [1] * 10**6, flags=MPOL_MF_MOVE | 8),
        errno.EINVAL,
        "",
    ),
    (lambda m, p, q, a, s: p.migrate_pages([0], [5]), errno.EPERM, "new_nodes"),
    (lambda m, p, q, a, s: q.migrate_pages([0], [5]), errno.EINVAL, "new_nodes"),
    (lambda m, p, q, a, s: m.spawn(cap_sys_ptrace="yes"), TypeError, "cap_sys_ptrace"),
    (lambda m, p, q, a, s: p.migrate_pages([0], [1], pid=q.pid), errno.EPERM, ""),
    (lambda m, p, q, a, s: p.migrate_pages("01", [1]), TypeError, "old_nodes"),
    (lambda m, p, q, a, s: p.migrate_pages([0], [2**40]), errno.EINVAL, "new_nodes"),
    (lambda m, p, q, a, s: m.spawn(uid=-1), BadArgument, "uid"),
    (lambda m, p, q, a, s: m.spawn(cap_sys_nice=1), TypeError, "cap_sys_nice"),
    (lambda m, p, q, a, s: m.offload.register(m.cpu, reasons="fast"), errno.EINVAL, "reason"),
    (lambda m, p, q, a, s: m.offload.unregister(m.cpu), errno.EINVAL, ""),
    (lambda m, p, q, a, s: m.offload.register("cpu-serial"), errno.EINVAL, "migrator"),
]


@pytest.mark.parametrize("call, expect, text", CASES)
def test_bad_calls_leave_the_machine_as_it_was(world, call, expect, text):
    m, p, q, a, s = world
    before = snapshot(m, p)
    if isinstance(expect, int):
        with pytest.raises(OSError) as e:
            call(m, p, q, a, s)
        assert e.value.errno == expect
    else:
        with pytest.raises(expect) as e:
            call(m, p, q, a, s)
        assert isinstance(e.value, OffloadError)
    assert text in str(e.value)
    after = snapshot(m, p)
    assert after[:3] == before[:3] and after[4] == before[4]
    assert all((x == y).all() for x, y in zip(after[3], before[3]))


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(nodes=""), "nodes"),
        (dict(nodes="8M,0"), "nodes"),
        (dict(nodes="4097"), "nodes"),
        (dict(nodes="cxl:8M"), "kind"),
        (dict(nodes=["8M"]), "nodes"),
        (dict(cpu=""), "spec"),
        (dict(cpu="nope"), "unknown backend"),
        (dict(cpu=42), "cpu"),
        (dict(offload="cpu-batched:threads=0"), "out of range"),
        (dict(offload=3.5), "offload"),
        (dict(policy="static:2"), "policy"),
        (dict(policy="threshold:abc"), "policy"),
        (dict(batch_pages=0), "batch_pages"),
        (dict(batch_pages="512"), "batch_pages"),
        (dict(verify="yes"), "verify"),
        (dict(offload_timeout=0), "offload_timeout"),
        (dict(offload_timeout="1"), "offload_timeout"),
    ],
)
def test_bad_machine_arguments(kwargs, text):
    kwargs.setdefault("nodes", "8M")
    with pytest.raises(OffloadError) as e:
        Machine(**kwargs)
    assert text in str(e.value)


@pytest.mark.parametrize(
    "spec, text",
    [
        ("dma-threads:channels=99", "out of range"),
        ("dma-threads:bandwidth=-1", "out of range"),
        ("dma-threads:coalesce=maybe", "not a valid bool"),
        ("cupy:path=warp", "cupy"),
        ("cpu-batched:threads=1,threads=2", "twice"),
        ("cpu-batched:=2", "key=value"),
    ],
)
def test_bad_specs(spec, text):
    with pytest.raises(OffloadError) as e:
        registry.create(spec)
    assert text in str(e.value)


@pytest.mark.parametrize(
    "args, text",
    [
        (["bench", "--sizes", "4K,zz"], "--sizes"),
        (["bench", "--total", "0"], "--total"),
        (["bench", "--backends", ";"], "--backends"),
        (["bench", "--repeat", "-1"], "--repeat"),
        (["bench", "--batch-pages", "0"], "--batch-pages"),
        (["bench", "--to", "cxl"], "--to"),
        (["bench", "split", "--policies", "bogus"], "--policies"),
        (["bench", "split", "--offload", "nope"], "--offload"),
        (["bench", "split", "--offload", "emu+nope"], "--offload"),
        (["bench", "split", "--offload", "emu@sizes=2M-4K"], "--offload"),
        (["bench", "split", "--second", "emu:gbps=-1"], "--second"),
        (["bench", "latency", "--batches", "0"], "--batches"),
        (["bench", "latency", "--size", "3K"], "--sizes"),
        (["bench", "stress", "--seconds", "0"], "--seconds"),
        (["bench", "stress", "--policy", "x"], "--policy"),
        (["info", "--nodes", "1Q"], "--nodes"),
        (["nonsense"], "No such command"),
        (["bench", "--total", "1024T"], "--total"),
        (["bench", "stress", "--seed", "-100"], "--seed"),
        (["bench", "--plot", "/no/such/folder/x.png"], "--plot"),
    ],
)
def test_cli_rejects_bad_input_clearly(args, text):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert text in r.output
    assert "Traceback" not in r.output
