"""A stand-in for the slice of CuPy the cupy engine uses, acting on host memory.

It lets the engine's own logic (addresses, channels, both copy paths, completion) run
and be checked on machines without a GPU; real CUDA is tested by the gpu-marked tests.
"""

import ctypes
import types

import numpy as np

PAGE = 4096
log = {"memcpy": 0, "launch": 0, "registered": set()}


class _Ctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class Device(_Ctx):
    def __init__(self, i=0):
        self.id = i


class Stream(_Ctx):
    _next = 1

    def __init__(self, non_blocking=False):
        self.ptr = Stream._next
        Stream._next += 1

    def synchronize(self):
        pass


class Event:
    def __init__(self, block=False, disable_timing=False):
        self.done = False

    def record(self, stream=None):
        self.done = True


class RawKernel:
    def __init__(self, code, name):
        assert "copy_pages" in code and name == "copy_pages"

    def __call__(self, grid, block, args):
        src, dst, n = args
        log["launch"] += 1
        for p in range(int(n)):
            ctypes.memmove(int(dst[p]), int(src[p]), PAGE)


def _memcpy_async(dst, src, n, kind, stream):
    assert kind == 4
    log["memcpy"] += 1
    ctypes.memmove(dst, src, n)


def _pointer_attributes(ptr):
    raise RuntimeError("not a device pointer")


runtime = types.SimpleNamespace(
    hostRegister=lambda ptr, size, flags: log["registered"].add(ptr),
    hostUnregister=lambda ptr: log["registered"].discard(ptr),
    pointerGetAttributes=_pointer_attributes,
    memcpyAsync=_memcpy_async,
)
cuda = types.SimpleNamespace(Device=Device, Stream=Stream, Event=Event, runtime=runtime)
asarray = np.asarray
