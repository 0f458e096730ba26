"""The real kernel's move_pages(2) on this host's NUMA nodes, through ctypes."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time

import numpy as np

from offload.constants import MPOL_MF_MOVE, PAGE_SIZE
from offload.errors import OffloadError

from .stats import summarize

#: move_pages syscall numbers by machine
SYS_MOVE_PAGES = {"x86_64": 279, "aarch64": 239, "ppc64le": 301, "s390x": 310}
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def syscall_number() -> int | None:
    """move_pages' number on this machine, or None when unknown."""
    return SYS_MOVE_PAGES.get(platform.machine())


def move_pages(
    addrs: np.ndarray, nodes: np.ndarray | None, flags: int = MPOL_MF_MOVE, pid: int = 0
) -> tuple[int, np.ndarray]:
    """The move_pages(2) system call: (return value, status per page).

    Raises
    ------
    OSError
        When the call itself fails (errno from the kernel).
    """
    nr = syscall_number()
    if nr is None:
        raise OSError(38, f"move_pages: unknown syscall number on {platform.machine()}")
    n = int(addrs.size)
    pages = np.ascontiguousarray(addrs, dtype=np.uint64)
    status = np.full(n, -1, dtype=np.int32)
    node_arr = None if nodes is None else np.ascontiguousarray(nodes, dtype=np.int32)
    ret = _libc.syscall(
        ctypes.c_long(nr),
        ctypes.c_long(pid),
        ctypes.c_ulong(n),
        ctypes.c_void_p(pages.ctypes.data),
        ctypes.c_void_p(0 if node_arr is None else node_arr.ctypes.data),
        ctypes.c_void_p(status.ctypes.data),
        ctypes.c_int(flags),
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret), status


class Region:
    """An anonymous mapping of *length* bytes, faulted in with a pattern."""

    def __init__(self, length: int, huge: bool) -> None:
        self.map = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        _libc.madvise(self.addr, length, MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE)
        self.view = np.frombuffer(self.map, dtype=np.uint8)
        self.view[:] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8)
        self.expect = self.view.copy()

    def close(self) -> None:
        del self.view
        self.map.close()


def run(folio_size: int, total: int, nodes: tuple[int, int], repeat: int, warmup: int) -> dict:
    """Move *total* bytes between two real NUMA nodes with move_pages(2), like our suite."""
    region = Region(total, huge=folio_size > PAGE_SIZE)
    try:
        # one entry per folio: a THP moves whole from its first page
        addrs = region.addr + np.arange(0, total, folio_size, dtype=np.uint64)
        move_pages(addrs, np.full(addrs.size, nodes[0]))
        gbps = []
        where = 0
        for i in range(warmup + repeat):
            where = 1 - where
            t = np.full(addrs.size, nodes[where], dtype=np.int32)
            t0 = time.perf_counter()
            ret, status = move_pages(addrs, t)
            dt = time.perf_counter() - t0
            if ret != 0 or (status != nodes[where]).any():
                raise OffloadError(
                    f"kernel move_pages left {int((status != nodes[where]).sum())} pages behind"
                )
            if not np.array_equal(region.view, region.expect):
                raise OffloadError("kernel move_pages changed the bytes")
            if i >= warmup:
                gbps.append(total / dt / 1e9)
    finally:
        region.close()
    row = {
        "suite": "kernel",
        "backend": "kernel move_pages(2)",
        "folio_size": folio_size,
        "total_bytes": total,
        "folios": total // folio_size,
        "repeat": repeat,
        "gbps": gbps,
        "verified": True,
    }
    row.update(summarize(gbps))
    return row


def one_page_us(calls: int = 200, rounds: int = 9) -> float | None:
    """Microseconds per move_pages(2) of one page to node 0 on this host's kernel (where
    the page already is when the host has one node), the median over *rounds* rounds of
    *calls* calls: None where the call is unknown."""
    if syscall_number() is None:
        return None
    r = Region(PAGE_SIZE, huge=False)
    try:
        addrs = np.array([r.addr], dtype=np.uint64)
        nodes = np.zeros(1, dtype=np.int32)
        for _ in range(100):
            move_pages(addrs, nodes)
        per_round = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                move_pages(addrs, nodes)
            per_round.append((time.perf_counter() - t0) / calls * 1e6)
        return float(np.median(per_round))
    except OSError:
        return None
    finally:
        r.close()
