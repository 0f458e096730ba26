"""What the benchmarks record about the host: CPU, NUMA nodes, GPU, library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_available() -> int:
    """Bytes of memory available to new allocations (MemAvailable), 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss() -> int:
    """The most memory this process has held so far (its peak resident set), in bytes."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def numa_nodes() -> list[int]:
    """Online NUMA nodes with memory, from sysfs (``[]`` when unknown)."""
    base = Path("/sys/devices/system/node")
    return _ranges(_read(base / "has_memory") or _read(base / "online"))


def gpu_summary() -> str:
    """The cupy backend's availability line (cheap; never initialises CUDA here)."""
    from . import registry

    if "cupy" not in registry.names():
        return "none (no cupy backend registered)"
    info = registry.info("cupy")
    return "usable" if info.available else f"none ({info.reason})"


def host_info() -> dict:
    """Machine metadata for the JSON document."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cpus = os.cpu_count() or 1
    info = {
        "cpus": cpus,
        "cpu_model": cpu_model(),
        "numa_nodes": len(numa_nodes()) or 1,
        "gpu": gpu_summary(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import importlib.metadata as md

        info["cupy"] = next(
            (md.version(d) for d in ("cupy-cuda12x", "cupy-cuda13x", "cupy") if _has_dist(md, d)),
            None,
        )
    except Exception:  # pragma: no cover
        info["cupy"] = None
    return info


def _has_dist(md: Any, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _ranges(text: str) -> list[int]:
    """``"0-3,8"`` -> [0, 1, 2, 3, 8]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def numa_hardware() -> list[dict]:
    """Per online NUMA node, as ``numactl --hardware`` shows it: its CPUs, total and free
    memory in bytes, and its distances to every node (``[]`` when sysfs says nothing)."""
    base = Path("/sys/devices/system/node")
    out = []
    for nid in _ranges(_read(base / "online")):
        d = base / f"node{nid}"
        mem: dict[str, int] = {}
        for line in _read(d / "meminfo").splitlines():
            f = line.split()
            if len(f) >= 4 and f[2] in ("MemTotal:", "MemFree:"):
                mem[f[2][:-1]] = int(f[3]) * 1024
        out.append(
            {
                "node": nid,
                "cpus": _ranges(_read(d / "cpulist")),
                "size_bytes": mem.get("MemTotal", 0),
                "free_bytes": mem.get("MemFree", 0),
                "distances": [int(x) for x in _read(d / "distance").split()],
            }
        )
    return out


def gpus() -> dict:
    """NVIDIA GPUs and driver seen from this host without initialising CUDA: the kernel
    driver's version (/proc/driver/nvidia), the device nodes, and what CuPy would use."""
    return {
        "driver": nvidia_driver(),
        "device_nodes": nvidia_devices(),
        "cupy": gpu_summary(),
    }


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version line (/proc/driver/nvidia), or None."""
    version = _read(Path("/proc/driver/nvidia/version")).splitlines()
    return version[0] if version else None


def nvidia_devices() -> list[str]:
    """The NVIDIA device nodes (/dev/nvidia0, ...)."""
    return sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))


def instability() -> list[str]:
    """What on this host makes timings vary between runs, as far as it can be seen."""
    out = []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = os.getloadavg()[0]
        if cpus and load > 0.75 * cpus:
            out.append(f"the load average ({load:.1f}) is near or above the {cpus} usable CPUs")
    except OSError:
        pass
    if " hypervisor" in _read(Path("/proc/cpuinfo")):
        out.append("this is a virtual machine: its neighbours share the memory bandwidth")
    gov = _read(Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"))
    if gov and gov != "performance":
        out.append(f"the CPU frequency governor is {gov!r}, not 'performance'")
    if cpus is not None and cpus <= 2:
        out.append(f"only {cpus} CPUs: the benchmark's own threads compete with the copy")
    return out
