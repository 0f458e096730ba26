"""Rooflines measured in the same run: one large memcpy of the same bytes, and a
compiled loop of per-page memcpy over as many randomly scattered pages, each on one or
several threads.

Both copy with the stores the backends' compiled copies use (:func:`offload.native.copy_bytes`
and :func:`offload.native.copy_pages`: streaming stores where the CPU has them), so that
a row and its ceiling are measured with the same means; ``np.copyto`` where nothing
was compiled."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from offload import native

#: Bytes a reference's check compares at a time (no temporary the size of the copy).
CHECK_CHUNK = 8 << 20


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """One contiguous copy, compiled where it can be (it releases the GIL either way)."""
    if not native.copy_bytes(dst, src):
        np.copyto(dst, src)


def memcpy_gbps(total_bytes: int, repeat: int = 3) -> list[float]:
    """GB/s of ``repeat`` single-threaded copies of *total_bytes* between two buffers."""
    return memcpy_mt_gbps(total_bytes, 1, repeat)


def memcpy_mt_gbps(total_bytes: int, threads: int, repeat: int = 3) -> list[float]:
    """GB/s of ``repeat`` copies of *total_bytes*, split into *threads* contiguous slices
    copied at once by as many threads (the copies release the GIL): what the machine
    gives a copy that several CPUs share, the ceiling of the multi-threaded rows. Passes
    of a :class:`Memcpy` of its own, back to back."""
    ref = Memcpy(total_bytes)
    try:
        return [ref.run(threads) for _ in range(repeat)]
    finally:
        ref.close()


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


class _Threads:
    """A pool kept for timed passes: starting threads is no part of a copy."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._size = 0

    def ready(self, threads: int) -> None:
        """Start (and run once) the threads a pass on *threads* threads needs."""
        if threads > 1 and (self._pool is None or self._size < threads):
            if self._pool is not None:
                self._pool.shutdown()
            self._pool, self._size = ThreadPoolExecutor(threads), threads
            for f in [self._pool.submit(int) for _ in range(threads)]:
                f.result()

    def map(self, threads: int, fn: Callable[[int], object]) -> None:
        """``fn(i)`` for i < *threads*, at once (i = 0 on the calling thread)."""
        if threads == 1:
            fn(0)
            return
        self.ready(threads)
        assert self._pool is not None
        futures = [self._pool.submit(fn, i) for i in range(1, threads)]
        fn(0)
        for f in futures:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class Memcpy:
    """One contiguous copy of *total_bytes* between two buffers, split into *threads*
    slices copied at once (``np.copyto`` releases the GIL), kept ready so that it can be
    timed in turn with the benchmark's rows: the ceiling of a copy on that many CPUs."""

    def __init__(
        self, total_bytes: int, buffers: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """*buffers*: two arrays of at least *total_bytes* to copy between (another
        reference's, so that the memory is held once); else its own."""
        if buffers is not None:
            src, dst = (b.reshape(-1)[:total_bytes] for b in buffers)
            if src.size < total_bytes or dst.size < total_bytes:
                raise ValueError("Memcpy: the buffers are smaller than total_bytes")
            self._src, self._dst, self._own = src, dst, False
        else:
            self._src = np.empty(total_bytes, dtype=np.uint8)
            self._src.fill(0x5A)
            self._dst = np.zeros_like(self._src)
            self._own = True
        np.copyto(self._dst, self._src)  # fault both buffers in
        self._threads = _Threads()

    @property
    def nbytes(self) -> int:
        """Memory its own buffers hold (0 when it borrows another reference's)."""
        return self._src.nbytes + self._dst.nbytes if self._own else 0

    def run(self, threads: int = 1) -> float:
        """One timed pass on *threads* threads; its GB/s."""
        n = self._src.size
        bounds = np.linspace(0, n, threads + 1).astype(np.int64).tolist()

        def part(i: int) -> None:
            _copy(self._dst[bounds[i] : bounds[i + 1]], self._src[bounds[i] : bounds[i + 1]])

        self._threads.ready(threads)  # threads are started outside the timed pass
        t0 = time.perf_counter()
        self._threads.map(threads, part)
        return n / (time.perf_counter() - t0) / 1e9

    def check(self, chunk: int = CHECK_CHUNK) -> bool:
        """Whether the last pass left the destination equal to the source (read in
        chunks on this thread, as the benchmark reads a row's bytes after each run)."""
        n = self._src.size
        return all(
            np.array_equal(self._dst[a : a + chunk], self._src[a : a + chunk])
            for a in range(0, n, chunk)
        )

    def close(self) -> None:
        self._threads.close()


class PageLoop:
    """A compiled loop of per-page ``memcpy`` over *total_bytes* of pages, chosen at
    random in one buffer and copied to random pages of another (what scattered folios
    allow; on T threads each copies one T-th of the pages), kept ready so that it can be
    timed again and again, in turn with the benchmark's rows.

    Raises
    ------
    RuntimeError
        Where no C compiler is available (check :func:`offload.native.available`).
    """

    def __init__(self, total_bytes: int, seed: int = 0, spread: int = 2) -> None:
        """*spread*: each buffer holds that many times the pages copied."""
        from offload.constants import PAGE_SIZE

        if not native.available():
            raise RuntimeError("no compiled page copy on this machine (no C compiler)")
        n = max(1, total_bytes // PAGE_SIZE)
        self.total_bytes = n * PAGE_SIZE
        # page frames as a machine's: starting on a page boundary
        self._src = native.frames(spread * n)
        self._src.fill(0x5A)
        self._dst = native.frames(spread * n)
        rng = np.random.default_rng(seed)
        self._sp = rng.permutation(spread * n)[:n]
        self._dp = rng.permutation(spread * n)[:n]
        self._copy = native.copy_pages
        self._copy(self._dst, self._src, self._dp, self._sp)  # fault in, warm
        self._threads = _Threads()

    @property
    def nbytes(self) -> int:
        """Memory its buffers hold."""
        return self._src.nbytes + self._dst.nbytes

    @property
    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Its source and destination buffers (a :class:`Memcpy` may borrow them)."""
        return self._src, self._dst

    def run(self, threads: int = 1) -> float:
        """One timed pass on *threads* threads (each a contiguous share of the pages, one
        compiled call that releases the GIL); its GB/s."""
        if threads == 1:
            t0 = time.perf_counter()
            self._copy(self._dst, self._src, self._dp, self._sp)
            return self.total_bytes / (time.perf_counter() - t0) / 1e9
        n = self._sp.size
        bounds = np.linspace(0, n, threads + 1).astype(np.int64).tolist()
        shares = [
            (self._dp[bounds[i] : bounds[i + 1]], self._sp[bounds[i] : bounds[i + 1]])
            for i in range(threads)
        ]
        self._threads.ready(threads)  # threads are started outside the timed pass
        t0 = time.perf_counter()
        self._threads.map(threads, lambda i: self._copy(self._dst, self._src, *shares[i]))
        return self.total_bytes / (time.perf_counter() - t0) / 1e9

    def check(self, chunk: int = CHECK_CHUNK) -> bool:
        """Whether every page the last pass copied equals its source page (read in
        chunks on this thread, as the benchmark reads a row's bytes after each run)."""
        step = max(1, chunk // self._src.shape[1])
        return all(
            np.array_equal(self._dst[self._dp[a : a + step]], self._src[self._sp[a : a + step]])
            for a in range(0, self._sp.size, step)
        )

    def close(self) -> None:
        self._threads.close()
