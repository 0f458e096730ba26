"""A stand-in for the slice of CuPy (and of ``cuda.bindings.driver``) the cupy engine uses,
acting on host memory.

It lets the engine's own logic (addresses, channels, every copy path, completion) run
and be checked on machines without a GPU (the tests, ``offload gpu-check --fake``);
real CUDA is exercised only on a GPU. :func:`installed` puts it in ``sys.modules`` for
the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import types
from collections.abc import Iterator

import numpy as np

PAGE = 4096
#: What the stand-in was asked to do: memcpy calls, kernel launches, batch calls, the
#: host ranges registered now.
log: dict = {"memcpy": 0, "launch": 0, "batch": 0, "registered": set()}


class _Ctx:
    def __enter__(self) -> _Ctx:
        return self

    def __exit__(self, *a: object) -> None:
        return None


class Device(_Ctx):
    def __init__(self, i: int = 0) -> None:
        self.id = i


class Stream(_Ctx):
    _next = 1

    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = Stream._next
        Stream._next += 1

    def synchronize(self) -> None:
        pass


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False) -> None:
        self.done = False

    def record(self, stream: object = None) -> None:
        self.done = True


class RawKernel:
    def __init__(self, code: str, name: str) -> None:
        assert "copy_pages" in code and name == "copy_pages"

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        src, dst, n = args
        log["launch"] += 1
        for p in range(int(n)):
            ctypes.memmove(int(dst[p]), int(src[p]), PAGE)


def _memcpy_async(dst: int, src: int, n: int, kind: int, stream: int) -> None:
    assert kind == 4
    log["memcpy"] += 1
    ctypes.memmove(dst, src, n)


def _pointer_attributes(ptr: int) -> object:
    raise RuntimeError("not a device pointer")


def _runtime_version() -> int:
    return 12080


runtime = types.SimpleNamespace(
    hostRegister=lambda ptr, size, flags: log["registered"].add(ptr),
    hostUnregister=lambda ptr: log["registered"].discard(ptr),
    pointerGetAttributes=_pointer_attributes,
    memcpyAsync=_memcpy_async,
    runtimeGetVersion=_runtime_version,
    driverGetVersion=_runtime_version,
)
cuda = types.SimpleNamespace(Device=Device, Stream=Stream, Event=Event, runtime=runtime)
asarray = np.asarray
__version__ = "stand-in"


# -- cuda.bindings.driver: the batch API ---------------------------------------------------
class CUresult:
    CUDA_SUCCESS = 0


class CUmemcpySrcAccessOrder:
    CU_MEMCPY_SRC_ACCESS_ORDER_STREAM = 1


class CUmemcpyAttributes:
    def __init__(self) -> None:
        self.srcAccessOrder = 0


def CUdeviceptr(value: int) -> int:
    return int(value)


def CUstream(value: int) -> int:
    return int(value)


def cuMemcpyBatchAsync(
    dsts: list, srcs: list, sizes: list, count: int, attrs: list, idxs: list, nattrs: int, stream
) -> tuple[int, int]:
    assert len(dsts) == len(srcs) == len(sizes) == count and nattrs == len(attrs) == len(idxs)
    assert all(a.srcAccessOrder == 1 for a in attrs) and idxs[0] == 0
    log["batch"] += 1
    for d, s, n in zip(dsts, srcs, sizes):
        ctypes.memmove(int(d), int(s), int(n))
    return (CUresult.CUDA_SUCCESS, 0)


driver = types.SimpleNamespace(
    CUresult=CUresult,
    CUmemcpySrcAccessOrder=CUmemcpySrcAccessOrder,
    CUmemcpyAttributes=CUmemcpyAttributes,
    CUdeviceptr=CUdeviceptr,
    CUstream=CUstream,
    cuMemcpyBatchAsync=cuMemcpyBatchAsync,
)


def reset() -> None:
    """Zero the counts of :data:`log` (the registered ranges stay)."""
    log.update(memcpy=0, launch=0, batch=0)


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
    """``cupy`` and ``cuda.bindings.driver`` are the stand-in inside the block."""
    me = sys.modules[__name__]
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver  # type: ignore[attr-defined]
    top = types.ModuleType("cuda")
    top.bindings = bindings  # type: ignore[attr-defined]
    names = {"cupy": me, "cuda": top, "cuda.bindings": bindings, "cuda.bindings.driver": driver}
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)  # type: ignore[arg-type]
    try:
        yield me
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


__all__ = ["installed", "log", "reset"]
