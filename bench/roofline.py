"""Rooflines measured in the same run: one large memcpy of the same bytes, and a
compiled loop of per-page memcpy over as many randomly scattered pages."""

from __future__ import annotations

import itertools
import time

import numpy as np


def memcpy_gbps(total_bytes: int, repeat: int = 3) -> list[float]:
    """GB/s of ``repeat`` single-threaded copies of *total_bytes* between two buffers."""
    src = np.empty(total_bytes, dtype=np.uint8)
    src.fill(0x5A)
    dst = np.zeros_like(src)
    np.copyto(dst, src)  # fault both buffers in before timing
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        out.append(total_bytes / (time.perf_counter() - t0) / 1e9)
    return out


def memcpy_mt_gbps(total_bytes: int, threads: int, repeat: int = 3) -> list[float]:
    """GB/s of ``repeat`` copies of *total_bytes*, split into *threads* contiguous slices
    copied at once by as many threads (``np.copyto`` releases the GIL): what the machine
    gives a copy that several CPUs share, the ceiling of the multi-threaded rows."""
    from concurrent.futures import ThreadPoolExecutor

    src = np.empty(total_bytes, dtype=np.uint8)
    src.fill(0x5A)
    dst = np.zeros_like(src)
    bounds = np.linspace(0, total_bytes, threads + 1).astype(np.int64)
    parts = [(dst[a:b], src[a:b]) for a, b in itertools.pairwise(bounds)]
    out = []
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: np.copyto(*p), parts))  # fault in, start the threads
        for _ in range(repeat):
            t0 = time.perf_counter()
            list(pool.map(lambda p: np.copyto(*p), parts))
            out.append(total_bytes / (time.perf_counter() - t0) / 1e9)
    return out


def h2d_gbps(total_bytes: int, repeat: int = 3) -> list[float]:
    """GB/s of one cudaMemcpy of *total_bytes* from pinned host memory to the GPU."""
    import cupy

    host = cupy.cuda.alloc_pinned_memory(total_bytes)
    src = np.frombuffer(host, dtype=np.uint8, count=total_bytes)
    src.fill(0x5A)
    dst = cupy.empty(total_bytes, dtype=np.uint8)
    rt = cupy.cuda.runtime
    rt.memcpy(dst.data.ptr, src.ctypes.data, total_bytes, 1)  # warm
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rt.memcpy(dst.data.ptr, src.ctypes.data, total_bytes, 1)  # cudaMemcpyHostToDevice
        out.append(total_bytes / (time.perf_counter() - t0) / 1e9)
    return out


def page_loop_gbps(total_bytes: int, repeat: int = 3, seed: int = 0) -> list[float]:
    """GB/s of a compiled loop of per-page ``memcpy`` over *total_bytes* of pages, chosen
    at random in one buffer and copied to random pages of another (single-threaded:
    what scattered folios allow one CPU). Empty where no C compiler is available."""
    from offload import native
    from offload.constants import PAGE_SIZE

    if not native.available():
        return []
    n = max(1, total_bytes // PAGE_SIZE)
    src = np.empty((2 * n, PAGE_SIZE), dtype=np.uint8)
    src.fill(0x5A)
    dst = np.zeros_like(src)
    rng = np.random.default_rng(seed)
    sp = rng.permutation(2 * n)[:n]
    dp = rng.permutation(2 * n)[:n]
    native.copy_pages(dst, src, dp, sp)  # fault in, warm
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        native.copy_pages(dst, src, dp, sp)
        out.append(total_bytes / (time.perf_counter() - t0) / 1e9)
    return out
