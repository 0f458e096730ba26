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


class PageLoop:
    """A compiled loop of per-page ``memcpy`` over *total_bytes* of pages, chosen at
    random in one buffer and copied to random pages of another (single-threaded: what
    scattered folios allow one CPU), kept ready so that it can be timed again and again,
    in turn with the benchmark's rows.

    Raises
    ------
    RuntimeError
        Where no C compiler is available (check :func:`offload.native.available`).
    """

    def __init__(self, total_bytes: int, seed: int = 0, spread: int = 2) -> None:
        """*spread*: each buffer holds that many times the pages copied."""
        from offload import native
        from offload.constants import PAGE_SIZE

        if not native.available():
            raise RuntimeError("no compiled page copy on this machine (no C compiler)")
        n = max(1, total_bytes // PAGE_SIZE)
        self.total_bytes = n * PAGE_SIZE
        self._src = np.empty((spread * n, PAGE_SIZE), dtype=np.uint8)
        self._src.fill(0x5A)
        self._dst = np.zeros_like(self._src)
        rng = np.random.default_rng(seed)
        self._sp = rng.permutation(spread * n)[:n]
        self._dp = rng.permutation(spread * n)[:n]
        self._copy = native.copy_pages
        self._copy(self._dst, self._src, self._dp, self._sp)  # fault in, warm

    @property
    def nbytes(self) -> int:
        """Memory its buffers hold."""
        return self._src.nbytes + self._dst.nbytes

    def run(self) -> float:
        """One timed pass; its GB/s."""
        t0 = time.perf_counter()
        self._copy(self._dst, self._src, self._dp, self._sp)
        return self.total_bytes / (time.perf_counter() - t0) / 1e9
