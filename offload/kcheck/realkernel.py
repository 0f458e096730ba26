"""Running scenarios on a real kernel: natively on a host with two NUMA nodes, else in a
stock distribution kernel booted under qemu with two NUMA nodes.

The guest program (``guest.c`` beside this file) is compiled with the host's C
compiler (static, so that it can be the guest's ``/init``), packed with the script into
an initramfs (written here, in the ``newc`` cpio format) and booted with
``-numa node`` twice. Its ``KC`` lines on the serial console are the observations.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..kernels import image_version

#: where Debian and Ubuntu put their kernels
KERNEL_GLOBS = ("/boot/vmlinuz-*", "/boot/vmlinuz")
QEMU = "qemu-system-x86_64"
#: seconds a guest may take to reach its /init before it is killed (TCG boots in ~5 s)
BOOT_TIMEOUT_S = 60.0
INSTALL_HINT = (
    "as root on Debian/Ubuntu: apt-get install qemu-system-x86 linux-image-amd64 gcc libc6-dev"
)


class Unavailable(RuntimeError):
    """The real kernel cannot be reached here; the message says what is missing."""


class GuestFailed(RuntimeError):
    """The guest never started its scenarios (qemu refused to run, the kernel did not
    boot): one error for the whole run, with the end of what qemu printed."""


@dataclass
class GuestRun:
    """What the kernel printed: the KC lines, the console tail, how it ended."""

    lines: list[str]
    console_tail: str
    how: str  #: "native", "qemu-kvm" or "qemu-tcg"
    seconds: float
    timed_out: bool = False
    #: the kernel's release (``uname -r``, or the image's header), when known
    release: str | None = None


def kernel_cache() -> Path:
    """Where ``tools/fetch-kernels`` puts Debian's newer kernels (``<release>/vmlinuz``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "folio-offload" / "kernels"


def cached_kernels() -> dict[str, str]:
    """Series (``"6.12"``, ``"7.2"``) -> image, of the kernels in :func:`kernel_cache`
    (the newest release of each series)."""
    from ..kernels import parse_version

    out: dict[str, tuple[str, str]] = {}
    for img in sorted(kernel_cache().glob("*/vmlinuz")):
        release = image_version(img) or img.parent.name
        try:
            major, minor = parse_version(release)
        except ValueError:
            continue
        key = f"{major}.{minor}"
        if key not in out or _numbers(release) > _numbers(out[key][0]):
            out[key] = (release, str(img))
    return {k: v[1] for k, v in sorted(out.items())}


def _numbers(release: str) -> list[int]:
    """``"6.12.117+deb13"`` -> [6, 12, 117, 13]: releases ordered as versions."""
    import re

    return [int(x) for x in re.findall(r"\d+", release)]


def find_kernel(image: str | None = None) -> str:
    """The kernel image to boot (*image*, else the newest under /boot)."""
    if image:
        if not os.path.isfile(image):
            raise Unavailable(f"kernel image {image!r} does not exist")
        if not os.access(image, os.R_OK):
            raise Unavailable(f"kernel image {image!r} is not readable (run as root?)")
        return image
    found = sorted({p for g in KERNEL_GLOBS for p in glob.glob(g) if os.path.isfile(p)})
    readable = [p for p in found if os.access(p, os.R_OK)]
    if not readable:
        why = "not readable (run as root)" if found else "none found under /boot"
        raise Unavailable(f"no kernel image: {why}; {INSTALL_HINT}")
    return readable[-1]


def host_numa_nodes() -> list[int]:
    """NUMA nodes of this host that have memory."""
    try:
        text = Path("/sys/devices/system/node/has_memory").read_text().strip()
    except OSError:
        return []
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def build_guest(workdir: str) -> str:
    """Compile the guest program statically; return its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Unavailable(f"no C compiler to build the guest program; {INSTALL_HINT}")
    src = resources.files("offload.kcheck").joinpath("guest.c")
    out = os.path.join(workdir, "kcheck-guest")
    with resources.as_file(src) as path:
        r = subprocess.run(
            [cc, "-O2", "-static", "-o", out, str(path)], capture_output=True, text=True
        )
    if r.returncode:
        raise Unavailable(
            "could not build the static guest program (is libc6-dev "
            f"installed?): {r.stderr.strip()[-400:]}"
        )
    return out


def _cpio_entry(
    name: str, data: bytes, mode: int, ino: int, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    body = head + name.encode() + b"\0"
    body += b"\0" * (-len(body) % 4)
    body += data
    body += b"\0" * (-len(body) % 4)
    return body


def make_initramfs(path: str, init: str, script: str) -> None:
    """An initramfs (newc cpio) holding /init, /scenarios.txt and /dev/console."""
    entries = [
        ("dev", b"", 0o040755, None),
        ("dev/console", b"", 0o020600, (5, 1)),
        ("proc", b"", 0o040755, None),
        ("sys", b"", 0o040755, None),
        ("init", Path(init).read_bytes(), 0o100755, None),
        ("scenarios.txt", script.encode(), 0o100644, None),
    ]
    out = bytearray()
    for ino, (name, data, mode, rdev) in enumerate(entries, 1):
        out += _cpio_entry(name, data, mode, ino, rdev or (0, 0))
    out += _cpio_entry("TRAILER!!!", b"", 0, 0)
    Path(path).write_bytes(bytes(out))


def _kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def run_in_qemu(
    script: str,
    kernel: str | None = None,
    nodes: int = 2,
    node_mb: int | list[int] = 320,
    timeout: float = 300.0,
    accel: str = "auto",
) -> GuestRun:
    """Boot *kernel* with *nodes* NUMA nodes under qemu and run *script* as its /init.

    *node_mb* is the size of every node, or a list of sizes (MiB).
    """
    if shutil.which(QEMU) is None:
        raise Unavailable(f"{QEMU} is not installed; {INSTALL_HINT}")
    image = find_kernel(kernel)
    with tempfile.TemporaryDirectory(prefix="kcheck-") as tmp:
        init = build_guest(tmp)
        rd = os.path.join(tmp, "initramfs.cpio")
        make_initramfs(rd, init, script)
        tries = (
            ["kvm", "tcg"]
            if accel == "auto" and _kvm_usable()
            else (["tcg"] if accel == "auto" else [accel])
        )
        last = None
        for acc in tries:
            # KVM, where /dev/kvm opens, may still hang at boot: that try is cut short
            run = _boot(
                image,
                rd,
                nodes,
                node_mb,
                timeout,
                acc,
                boot_timeout=20.0 if acc == "kvm" and len(tries) > 1 else BOOT_TIMEOUT_S,
            )
            if run.lines and any(line.startswith("KC - - start") for line in run.lines):
                return run
            last = run
        assert last is not None
        tail = "\n".join(last.console_tail.strip().splitlines()[-8:]) or "(nothing)"
        why = f"killed after {last.seconds:.0f} s" if last.timed_out else "it exited"
        raise GuestFailed(
            f"qemu ({', '.join(tries)}) never started the scenarios with {image} ({why}); "
            f"the end of its output:\n{tail}"
        )


def _pump(proc: subprocess.Popen[bytes], chunks: list[bytes], started: threading.Event) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        chunks.append(raw)
        if b"KC - - start" in raw:
            started.set()


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C while qemu is being started, and deliver it once it has a handle.

    A KeyboardInterrupt inside ``subprocess.Popen`` (it waits for the child's exec)
    would leave a running qemu that nobody holds and so nobody kills.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)


def _boot(
    image: str,
    initrd: str,
    nodes: int,
    node_mb: int | list[int],
    timeout: float,
    accel: str,
    boot_timeout: float = BOOT_TIMEOUT_S,
) -> GuestRun:
    sizes = [node_mb] * nodes if isinstance(node_mb, int) else list(node_mb)
    cmd = [
        QEMU,
        "-machine",
        f"q35,accel={accel}",
        "-cpu",
        "max" if accel == "tcg" else "host",
        "-m",
        f"{sum(sizes)}M",
        "-smp",
        str(nodes),
        "-nographic",
        "-no-reboot",
        "-kernel",
        image,
        "-initrd",
        initrd,
        "-append",
        "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init "
        "transparent_hugepage=madvise numa_balancing=disable",
    ]
    for n in range(nodes):
        cmd += [
            "-object",
            f"memory-backend-ram,id=m{n},size={sizes[n]}M",
            "-numa",
            f"node,nodeid={n},memdev=m{n},cpus={n}",
        ]
    t0 = time.monotonic()
    chunks: list[bytes] = []
    started = threading.Event()
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    # a guest that does not reach /init in time (a KVM that hangs, a kernel that panics
    # early) is killed at once; one that started gets the whole timeout
    boot_limit = min(timeout, boot_timeout)
    timed_out = False
    try:
        with _interrupts_held():
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        reader = threading.Thread(target=_pump, args=(proc, chunks, started), daemon=True)
        reader.start()
        while not started.wait(0.1) and proc.poll() is None:
            if time.monotonic() - t0 > boot_limit:
                timed_out = True
                break
        if not timed_out:
            try:
                proc.wait(max(0.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        # timed out, or interrupted (Ctrl-C): qemu must not outlive the check
        if proc is not None:
            if timed_out or proc.poll() is None:
                proc.kill()
            proc.wait()
    assert reader is not None
    reader.join(5)
    text = b"".join(chunks).decode(errors="replace").replace("\r", "")
    return GuestRun(
        [line[line.index("KC ") :] for line in text.splitlines() if "KC " in line],
        text[-3000:],
        f"qemu-{accel}",
        time.monotonic() - t0,
        timed_out,
        image_version(image),
    )


def run_native(script: str) -> GuestRun:
    """Run *script* on this host's own kernel (needs two NUMA nodes and root)."""
    if os.geteuid() != 0:
        raise Unavailable(
            "running the scenarios on this host's kernel needs root "
            "(they spawn processes with other uids and capabilities)"
        )
    with tempfile.TemporaryDirectory(prefix="kcheck-") as tmp:
        init = build_guest(tmp)
        spath = os.path.join(tmp, "scenarios.txt")
        Path(spath).write_text(script)
        t0 = time.monotonic()
        r = subprocess.run([init, spath], capture_output=True, text=True, timeout=600)
        return GuestRun(
            [line for line in r.stdout.splitlines() if line.startswith("KC ")],
            (r.stdout + r.stderr)[-3000:],
            "native",
            time.monotonic() - t0,
            release=platform.release(),
        )


def run_real(
    script: str,
    kernel: str | None = None,
    nodes: int = 2,
    timeout: float = 300.0,
    native: str = "auto",
    node_mb: int | list[int] = 320,
    accel: str = "tcg",
) -> GuestRun:
    """Natively where this host has at least *nodes* NUMA nodes (and *native* allows),
    else under qemu."""
    if (
        native != "never"
        and len(host_numa_nodes()) >= nodes
        and host_numa_nodes()[:nodes] == list(range(nodes))
    ):
        return run_native(script)
    if native == "always":
        raise Unavailable(
            f"this host has {len(host_numa_nodes()) or 1} NUMA node(s) with "
            f"memory; {nodes} are needed to run natively"
        )
    return run_in_qemu(script, kernel, nodes, node_mb=node_mb, timeout=timeout, accel=accel)


__all__ = [
    "INSTALL_HINT",
    "GuestFailed",
    "GuestRun",
    "Unavailable",
    "build_guest",
    "cached_kernels",
    "find_kernel",
    "kernel_cache",
    "make_initramfs",
    "run_in_qemu",
    "run_native",
    "run_real",
]
