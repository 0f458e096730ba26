"""``offload gpu-check OUTDIR``: everything a GPU session must run, in one call.

A GPU is lent for minutes, so one command does it all and shows at once what fails: the
environment (driver, CUDA, CuPy, device), the GPU tests (``pytest -m gpu``), then the
GPU rows: node to node through the GPU (pinned host memory both sides), host to device
and device to host, per folio size, issue path and channel count, beside cpu-serial,
cpu-batched and the ceiling (one ``cudaMemcpyAsync`` of the same bytes, in the same
run), with the CPU seconds per GB of each row and the issue's targets. It writes
``report.json`` and ``log.txt`` into OUTDIR. Without a usable GPU it says why and exits 4
within seconds; with ``--fake`` the same sequence runs against the CuPy stand-in
(``offload.backends.dcbm.standin``: host memory, no device rows), so that CI proves the
check itself works.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from offload.sizes import format_size, parse_size

SCHEMA = "offload-gpu-check/1"
#: Exit status where no GPU is usable (and no --fake).
NO_GPU = 4
#: The issue's targets on an H100/H200.
TARGETS = {
    "h2d_2M_gbps": 40.0,
    "h2d_4K_gbps": 12.6,
    "h2h_2M_over_cpu_serial": 3.0,
    "gpu_cpu_s_per_gb": 0.05,
    "descriptor_us_per_folio": 0.05,
}
TESTS_TIMEOUT_S = 240


class Log:
    """Lines printed and kept for ``log.txt``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)
        click.echo(line)


def environment(fake: bool) -> tuple[bool, str, dict]:
    """(usable, why not, what was found): the driver, CUDA, CuPy and the device."""
    env: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    if fake:
        env.update(cupy="stand-in", device="none (the CuPy stand-in on host memory)")
        return True, "", env
    from offload.backends.dcbm.cupy_engine import batch_status
    from offload.backends.dcbm.probe import cuda_status

    ok, why, info = cuda_status()
    env.update(info)
    env["batch_path"] = batch_status()[1] or "available"
    return ok, why, env


@contextlib.contextmanager
def _backend_world(fake: bool) -> Iterator[None]:
    if not fake:
        yield
        return
    from offload.backends.dcbm import standin

    with standin.installed():
        yield


def run_tests(fake: bool, log: Log) -> dict:
    """The GPU tests (or, with the stand-in, the engine's logic tests) in a child."""
    root = Path(__file__).resolve().parents[1]
    tests = root / "tests"
    if not (tests / "conftest.py").exists():
        log("tests: not run (no tests/ beside this install: run from a checkout)")
        return {"ran": False, "why": "no tests/ directory beside the package"}
    # a test module that needs a package the GPU machine lacks (hypothesis, say) is
    # reported, and the GPU tests of the others still run
    target = (
        ["tests/test_cupy_engine_logic.py"]
        if fake
        else ["-m", "gpu", "--continue-on-collection-errors", "tests"]
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *target]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=root, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S
        )
        out, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        out, rc = f"{partial}\n(killed after {TESTS_TIMEOUT_S} s)", -1
    summary = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
    log(f"tests: {' '.join(target)}: {summary} (exit {rc}, {time.perf_counter() - t0:.0f} s)")
    if rc != 0:
        for line in out.splitlines()[-40:]:
            log(f"  | {line}")
    return {"ran": True, "command": " ".join(cmd), "exit": rc, "summary": summary}


def descriptor_cost(n: int = 65536) -> float:
    """Microseconds per 4 KiB folio of the CPU's descriptor work for the GPU: channel
    plan, addresses, the kernel's page list (host arithmetic only, no CUDA)."""
    from offload import FolioBatch
    from offload.backends.dcbm.cupy_engine import CupyEngine, page_addresses
    from offload.backends.dcbm.plan import plan_batch

    rng = np.random.default_rng(0)
    mem = {0: np.zeros((1, 8), np.uint8), 1: np.zeros((1, 8), np.uint8)}
    src = rng.permutation(4 * n)[:n]
    dst = rng.permutation(4 * n)[:n]
    batch = FolioBatch(np.zeros(n), src, np.ones(n), dst, np.zeros(n), memory=mem)
    eng = CupyEngine()
    eng._base = lambda frames: frames.ctypes.data
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        plan = plan_batch(batch, 4, coalesce=True)
        for c in range(plan.channels):
            d = plan.of_channel(c)
            s, t = eng._addresses(plan, d, mem)
            page_addresses(s, t, plan.npages[d])
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def _pattern(nbytes: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8)


def time_moves(make: Callable[[], Any], to: str, size: int, total: int, repeat: int) -> dict:
    """Move *total* bytes of *size* folios node 0 -> 1 and back, *repeat* times after a
    warm-up, on a machine *make* builds; GB/s each way and CPU seconds per GB."""
    sides = make()
    mig = sides.get("offload")
    try:
        out = _time_moves(to, size, total, repeat, sides)
        if mig is not None and not isinstance(mig, str):
            # a row whose folios the engine did not copy is the CPU's speed, not the GPU's
            from offload.counters import counters

            c = counters(mig)
            given = c.folios_migrated + c.folios_failures
            out["offloaded_fraction"] = c.folios_migrated / given if given else 0.0
            out["engine_error"] = getattr(getattr(mig, "engine", None), "last_error", None)
        return out
    finally:
        if mig is not None and not isinstance(mig, str):
            mig.close()  # ours to close: its streams, and the host memory it pinned


def _time_moves(to: str, size: int, total: int, repeat: int, sides: dict) -> dict:
    from offload import Machine

    node = ((total + (8 << 20)) >> 21) << 21
    with Machine(
        nodes=f"dram:{node},{to}:{node}",
        policy="offload-only",
        prefault=True,
        layout="aged",
        batch_pages=65536,
        **sides,
    ) as m:
        p = m.spawn()
        a = p.mmap(total, node=0, folio_size=size)
        data = _pattern(total)
        p.write(a, data)
        addrs = np.arange(a, a + total, size)
        there: list[float] = []
        back: list[float] = []
        copy: list[float] = []
        cpu = 0.0
        for r in range(repeat + 1):
            for target, times in ((1, there), (0, back)):
                c0, t0 = time.process_time(), time.perf_counter()
                s0 = m.stats["engine"]["copy_s"]
                res = p.move_pages(addrs, [target] * addrs.size)
                t = time.perf_counter() - t0
                if res.ret != 0 or set(res.status) != {target}:
                    raise RuntimeError(f"move_pages to node {target} failed: ret {res.ret}")
                if r:
                    times.append(t)
                    cpu += time.process_time() - c0
                    if target == 1:
                        copy.append(m.stats["engine"]["copy_s"] - s0)
        if not np.array_equal(p.read_array(a, total), data):
            raise RuntimeError("the bytes moved are wrong")
    gb = total / 1e9
    return {
        "there_gbps": gb / float(np.median(there)),
        "back_gbps": gb / float(np.median(back)),
        "cpu_s_per_gb": cpu / (2 * repeat * gb),
        "copy_s": float(np.median(copy)),
        "verified": True,
    }


def ceiling(total: int, to: str, fake: bool) -> float:
    """GB/s of one cudaMemcpyAsync of *total* bytes from pinned host memory to pinned
    host memory (``dram``) or to the device (``device``), timed on the stream."""
    import cupy

    src = np.ones(total, np.uint8)
    if fake:
        dst = np.zeros(total, np.uint8)
        dptr = dst.ctypes.data
    elif to == "device":
        dst = cupy.empty(total, np.uint8)
        dptr = int(dst.data.ptr)
    else:
        pinned = cupy.cuda.alloc_pinned_memory(total)
        dst = np.frombuffer(pinned, np.uint8, total)
        dptr = dst.ctypes.data
    rt = cupy.cuda.runtime
    if not fake:
        rt.hostRegister(src.ctypes.data, total, 0)
    stream = cupy.cuda.Stream(non_blocking=True)
    best = float("inf")
    try:
        for _ in range(4):
            t0 = time.perf_counter()
            rt.memcpyAsync(dptr, src.ctypes.data, total, 4, stream.ptr)
            stream.synchronize()
            best = min(best, time.perf_counter() - t0)
    finally:
        if not fake:
            rt.hostUnregister(src.ctypes.data)
    return total / best / 1e9


def run_rows(
    fake: bool,
    sizes: list[int],
    channels: list[int],
    paths: list[str],
    total: int,
    repeat: int,
    log: Log,
    deadline: float = float("inf"),
    save: Callable[[list[dict]], None] = lambda rows: None,
) -> tuple[list[dict], dict]:
    """The GPU rows and their references; (rows, ceilings). No row starts after
    *deadline* (``time.monotonic()``); *save* gets the rows after each one."""
    from offload.backends.dcbm.cupy_engine import CupyDcbm, batch_status

    rows: list[dict] = []
    skipped = 0

    def spent() -> bool:
        nonlocal skipped
        if time.monotonic() < deadline:
            return False
        skipped += 1
        return True

    kinds = ["dram"] if fake else ["dram", "device"]
    ceilings = {to: ceiling(total, to, fake) for to in kinds}
    for to, gbps in ceilings.items():
        log(f"ceiling, one cudaMemcpyAsync of {format_size(total)} host -> {to}: {gbps:.2f} GB/s")
    refs = {"cpu-serial": lambda: {}, "cpu-batched": lambda: {"offload": "cpu-batched"}}
    for size in sizes:
        for name, make in refs.items():
            if spent():
                continue
            r = time_moves(make, "dram", size, total, repeat)
            rows.append({"backend": name, "to": "dram", "folio_size": size, **r})
            save(rows)
            log(f"{name:28} {format_size(size):>5} dram:   {r['there_gbps']:7.2f} GB/s")
        for path in paths:
            if path == "batch" and not batch_status()[0]:
                log(f"cupy path=batch: not run: {batch_status()[1]}")
                continue
            for ch in channels:
                spec = f"cupy:channels={ch},path={path}"
                for to in kinds:

                    def make(ch: int = ch, path: str = path) -> dict:
                        return {"offload": CupyDcbm(channels=ch, path=path)}

                    if spent():
                        continue
                    try:
                        r = time_moves(make, to, size, total, repeat)
                    except Exception as exc:  # shown, and the check goes on
                        log(f"{spec:28} {format_size(size):>5} {to}: FAILED: {exc!r}")
                        rows.append(
                            {"backend": spec, "to": to, "folio_size": size, "error": repr(exc)}
                        )
                        continue
                    rows.append(
                        {"backend": spec, "to": to, "folio_size": size, "total_bytes": total, **r}
                    )
                    save(rows)
                    back = f", back {r['back_gbps']:.2f}" if to == "device" else ""
                    log(
                        f"{spec:28} {format_size(size):>5} {to}: {r['there_gbps']:7.2f} GB/s"
                        f"{back}, {r['cpu_s_per_gb']:.3f} CPU s/GB"
                    )
                    if r["offloaded_fraction"] < 1.0 or r["engine_error"]:
                        log(
                            f"  only {r['offloaded_fraction']:.0%} copied by the engine (the "
                            f"CPU copied the rest): {r['engine_error'] or 'no error recorded'}"
                        )
    if skipped:
        log(f"the time budget was spent: {skipped} rows not run (--budget)")
    serial = {r["folio_size"]: r["there_gbps"] for r in rows if r["backend"] == "cpu-serial"}
    for r in rows:
        if "there_gbps" in r:
            if r["folio_size"] in serial:
                r["ratio_to_cpu_serial"] = r["there_gbps"] / serial[r["folio_size"]]
            r["ratio_to_ceiling"] = r["there_gbps"] / ceilings[r["to"]]
    return rows, ceilings


def path_costs(rows: list[dict], to: str) -> dict[str, dict]:
    """Per issue path, its cost per channel (``fixed + per descriptor + bytes /
    bandwidth``) fitted to the copy step of the rows to *to* with that path: what
    ``cupy:costs=FILE`` gives ``auto``."""
    from offload.costmodel import fit_calls

    out = {}
    for path in ("memcpy", "kernel", "batch"):
        calls = []
        for r in rows:
            spec = r["backend"]
            if r["to"] != to or f"path={path}" not in spec or "copy_s" not in r:
                continue
            ch = int(spec.split("channels=")[1].split(",")[0])
            folios = r["total_bytes"] // r["folio_size"]
            calls.append((folios / ch, r["total_bytes"] / ch, r["copy_s"]))
        if len(calls) >= 2:
            f, b, t = (np.array(x, dtype=float) for x in zip(*calls))
            out[path] = fit_calls(f, b, t).as_dict()
    return out


def judge(rows: list[dict], descriptor_us: float) -> dict:
    """The issue's targets against the best GPU row of each case (None: not measured)."""
    # a row the CPU copied in part says nothing of the GPU
    gpu = [
        r
        for r in rows
        if r["backend"].startswith("cupy")
        and "there_gbps" in r
        and r.get("offloaded_fraction", 1.0) >= 1.0
    ]

    def best(to: str, size: int, key: str = "there_gbps") -> float | None:
        xs = [r[key] for r in gpu if r["to"] == to and r["folio_size"] == size and key in r]
        return max(xs) if xs else None

    found = {
        "h2d_2M_gbps": best("device", 2 << 20),
        "h2d_4K_gbps": best("device", 4096),
        "h2h_2M_over_cpu_serial": best("dram", 2 << 20, "ratio_to_cpu_serial"),
        "gpu_cpu_s_per_gb": min((r["cpu_s_per_gb"] for r in gpu), default=None),
        "descriptor_us_per_folio": descriptor_us,
    }
    out = {}
    for key, want in TARGETS.items():
        got = found[key]
        lower = key in ("gpu_cpu_s_per_gb", "descriptor_us_per_folio")
        met = None if got is None else (got <= want if lower else got >= want)
        out[key] = {"target": want, "measured": got, "met": met}
    return out


def _write(outdir: Path, report: dict, log: Log) -> None:
    """report.json (through a rename: never half written) and log.txt."""
    tmp = outdir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(outdir / "report.json")
    (outdir / "log.txt").write_text("\n".join(log.lines) + "\n")


@click.command("gpu-check")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fake", is_flag=True, help="Run against the CuPy stand-in (no GPU needed).")
@click.option("--sizes", default="4K,64K,2M", show_default=True, help="Folio sizes.")
@click.option("--channels", default="1,4,16", show_default=True, help="Channel counts.")
@click.option("--paths", default="memcpy,kernel,batch,auto", show_default=True, help="Issue paths.")
@click.option("--total", default=None, help="Bytes moved per row (default: 256M; 16M with --fake).")
@click.option(
    "--repeat",
    default=3,
    show_default=True,
    type=click.IntRange(1, 50),
    help="Timed moves each way per row, after one warm-up (the median is reported).",
)
@click.option("--no-tests", is_flag=True, help="Skip the test run.")
@click.option(
    "--budget",
    default=420.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds the whole check may take: no row starts after it (the report says how "
    "many were not run). report.json is rewritten after every row, so a check cut off "
    "still leaves what it measured.",
)
def gpu_check(
    outdir: Path,
    fake: bool,
    sizes: str,
    channels: str,
    paths: str,
    total: str | None,
    repeat: int,
    no_tests: bool,
    budget: float,
) -> None:
    """Everything a GPU session must run, in one call: environment, GPU tests, GPU rows
    (host to host through the GPU, host to device and back) beside cpu-serial,
    cpu-batched and one big cudaMemcpyAsync, and the targets; report.json and log.txt in
    OUTDIR. Exit 4 without a usable GPU (unless --fake), 1 when a test or a row failed.
    """
    from offload.backends.dcbm.cupy_engine import PATHS

    try:
        size_list = [parse_size(s.strip(), "--sizes") for s in sizes.split(",") if s.strip()]
        total_b = parse_size(total or ("16M" if fake else "256M"), "--total")
        chans = [int(c) for c in channels.split(",") if c.strip()]
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None
    path_list = [p.strip() for p in paths.split(",") if p.strip()]
    bad = [p for p in path_list if p not in PATHS]
    if bad or not path_list:
        raise click.BadParameter(f"unknown paths {bad} (known: {', '.join(PATHS)})")
    if not chans or not all(1 <= c <= 16 for c in chans):
        raise click.BadParameter("channels must be 1..16", param_hint="--channels")
    if any(total_b % s for s in size_list):
        raise click.BadParameter("--total must be a multiple of every folio size")
    t0 = time.perf_counter()
    deadline = time.monotonic() + budget
    log = Log()
    ok, why, env = environment(fake)
    log(f"gpu-check{' (--fake: the CuPy stand-in)' if fake else ''}")
    for k, v in env.items():
        log(f"  {k}: {v}")
    if not ok:
        click.echo(f"no usable GPU: {why}", err=True)
        sys.exit(NO_GPU)
    outdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"schema": SCHEMA, "fake": fake, "environment": env}
    report["tests"] = {"ran": False, "why": "--no-tests"} if no_tests else run_tests(fake, log)
    failed = report["tests"].get("exit", 0) != 0
    descriptor_us = descriptor_cost()
    log(f"descriptor building on the CPU: {descriptor_us:.4f} us per 4 KiB folio")

    def save(rows: list[dict]) -> None:
        _write(outdir, {**report, "rows": rows, "partial": True}, log)

    with _backend_world(fake):
        rows, ceilings = run_rows(
            fake, size_list, chans, path_list, total_b, repeat, log, deadline, save
        )
    failed |= any("error" in r for r in rows)
    costs = {to: path_costs(rows, to) for to in ("dram", "device")}
    if costs["dram"]:
        (outdir / "cupy-costs.json").write_text(json.dumps(costs["dram"], indent=2) + "\n")
        for path, c in costs["dram"].items():
            gbps = "inf" if c["gbps"] is None else f"{c['gbps']:.2f}"
            log(
                f"path {path}: {c['fixed_us']:.1f} us a channel + {c['per_folio_us']:.3f} us "
                f"a descriptor + bytes at {gbps} GB/s (cupy:costs={outdir / 'cupy-costs.json'})"
            )
    report.update(
        partial=False,
        path_costs=costs,
        total_bytes=total_b,
        repeat=repeat,
        descriptor_us_per_folio=descriptor_us,
        ceilings_gbps=ceilings,
        rows=rows,
        targets=None if fake else judge(rows, descriptor_us),
        seconds=time.perf_counter() - t0,
    )
    if report["targets"]:
        for key, t in report["targets"].items():
            log(f"target {key}: {t['measured']} (want {t['target']}): {t['met']}")
    log(f"done in {report['seconds']:.0f} s; report: {outdir / 'report.json'}")
    _write(outdir, report, log)
    if failed:
        sys.exit(1)
