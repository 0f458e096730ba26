"""``cupy``: DCBM whose channels are non-blocking CUDA streams (the GPU's copy engines).

Each descriptor becomes a ``cudaMemcpyAsync`` on its channel's stream; for channels
carrying many small descriptors a single gather/scatter kernel copies every page of the
channel in one launch, reading and writing pinned host memory directly. Host (``dram``)
nodes are page-locked (``cudaHostRegister``) while the engine uses them, so that the copy
engines reach them; ``device`` nodes are CuPy arrays. Completion is tracked with CUDA
events, and the timeout by polling them. CuPy is imported only when the engine opens.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from offload.constants import PAGE_SHIFT, PAGE_SIZE
from offload.errors import BadArgument
from offload.migrator import Option, shipped

from .driver import Dcbm
from .engine import DONE, FAILED, DmaEngine, Job
from .plan import MAX_CHANNELS, Plan
from .probe import cuda_status

#: cudaMemcpyDefault: the direction follows from the (unified) addresses.
MEMCPY_DEFAULT = 4
#: cudaHostRegisterPortable | cudaHostRegisterMapped
HOST_REGISTER_FLAGS = 1 | 2
#: Default size rule of the "auto" path: a channel goes to the kernel when it carries at
#: least this many descriptors of at most SMALL_BYTES on average.
SMALL_COUNT = 16
SMALL_BYTES = 64 << 10
#: Descriptors per CUDA event on the memcpy path (completion granularity).
EVENT_EVERY = 32

_KERNEL = r"""
extern "C" __global__
void copy_pages(const unsigned long long* src, const unsigned long long* dst, long long n)
{
    for (long long p = blockIdx.x; p < n; p += gridDim.x) {
        const uint4* s = (const uint4*)src[p];
        uint4* d = (uint4*)dst[p];
        for (int i = threadIdx.x; i < %d; i += blockDim.x)
            d[i] = s[i];
    }
}
""" % (PAGE_SIZE // 16)  # noqa: UP031 - C source with braces


class _CupyJob(Job):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.marks: list[tuple[Any, np.ndarray]] = []  # (event, descriptor indices)
        self.streams: list = []
        self.keep: list = []  # device buffers a launch still reads


class CupyEngine(DmaEngine):
    """DMA channels as CUDA streams on one device.

    Parameters
    ----------
    device : int
        CUDA device id.
    path : {"auto", "memcpy", "kernel"}
        ``memcpy``: one cudaMemcpyAsync per descriptor; ``kernel``: one gather/scatter
        launch per channel; ``auto``: the kernel for channels of many small descriptors.
    """

    def __init__(self, device: int = 0, path: str = "auto") -> None:
        self.device = device
        self.path = path
        self.cp: Any = None
        self.streams: list = []
        self._registered: dict[int, int] = {}
        self._kernel: Any = None

    def open(self, channels: int) -> None:
        import cupy

        self.cp = cupy
        with cupy.cuda.Device(self.device):
            self.streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(channels)]
            self._kernel = cupy.RawKernel(_KERNEL, "copy_pages")

    def can_access(self, node) -> bool:
        return getattr(node, "kind", "dram") in ("dram", "device")

    # -- memory -------------------------------------------------------------------------
    def _base(self, frames) -> int:
        """Device-usable base address of a node's frames (pinning host frames once)."""
        if isinstance(frames, np.ndarray):
            ptr = frames.ctypes.data
            if ptr not in self._registered:
                rt = self.cp.cuda.runtime
                rt.hostRegister(ptr, frames.nbytes, HOST_REGISTER_FLAGS)
                try:
                    dev = rt.pointerGetAttributes(ptr).devicePointer or ptr
                except Exception:
                    dev = ptr  # unified addressing: the host pointer works on the device
                self._registered[ptr] = dev
            return self._registered[ptr]
        return int(frames.data.ptr)

    def _addresses(self, plan: Plan, d: np.ndarray, memory) -> tuple[np.ndarray, np.ndarray]:
        src = np.empty(d.size, dtype=np.uint64)
        dst = np.empty(d.size, dtype=np.uint64)
        for nid in np.unique(plan.src_node[d]):
            sel = plan.src_node[d] == nid
            src[sel] = self._base(memory[int(nid)]) + (plan.src_pfn[d][sel] << PAGE_SHIFT)
        for nid in np.unique(plan.dst_node[d]):
            sel = plan.dst_node[d] == nid
            dst[sel] = self._base(memory[int(nid)]) + (plan.dst_pfn[d][sel] << PAGE_SHIFT)
        return src, dst

    # -- issue and completion -------------------------------------------------------------
    def _use_kernel(self, plan: Plan, d: np.ndarray) -> bool:
        if self.path != "auto":
            return self.path == "kernel"
        return d.size >= SMALL_COUNT and (plan.npages[d].mean() * PAGE_SIZE) <= SMALL_BYTES

    def submit(self, plan: Plan, memory: Mapping[int, object], channel_ids: list[int]) -> Job:
        cp = self.cp
        job = _CupyJob(plan)
        issued = np.zeros(len(plan), dtype=bool)
        try:
            with cp.cuda.Device(self.device):
                for c in range(plan.channels):
                    d = plan.of_channel(c)
                    if not d.size:
                        continue
                    stream = self.streams[channel_ids[c]]
                    job.streams.append(stream)
                    src, dst = self._addresses(plan, d, memory)
                    if self._use_kernel(plan, d):
                        self._issue_kernel(plan, d, src, dst, stream, job)
                    else:
                        self._issue_memcpy(plan, d, src, dst, stream, job)
                    issued[d] = True
        except Exception:
            job.status[~issued] = FAILED  # what was not issued falls back to the CPU
        return job

    def _issue_memcpy(self, plan, d, src, dst, stream, job) -> None:
        rt = self.cp.cuda.runtime
        nbytes = (plan.npages[d] << PAGE_SHIFT).tolist()
        for lo in range(0, d.size, EVENT_EVERY):
            for s, t, n in zip(
                src[lo : lo + EVENT_EVERY].tolist(),
                dst[lo : lo + EVENT_EVERY].tolist(),
                nbytes[lo : lo + EVENT_EVERY],
            ):
                rt.memcpyAsync(t, s, n, MEMCPY_DEFAULT, stream.ptr)
            ev = self.cp.cuda.Event(block=False, disable_timing=True)
            ev.record(stream)
            job.marks.append((ev, d[lo : lo + EVENT_EVERY]))

    def _issue_kernel(self, plan, d, src, dst, stream, job) -> None:
        cp = self.cp
        npg = plan.npages[d].astype(np.int64)
        steps = np.arange(int(npg.sum()), dtype=np.uint64)
        first = np.repeat(np.cumsum(npg) - npg, npg).astype(np.uint64)
        offs = (steps - first) << np.uint64(PAGE_SHIFT)
        s_pages = np.repeat(src, npg) + offs
        d_pages = np.repeat(dst, npg) + offs
        with stream:
            s_dev = cp.asarray(s_pages)
            d_dev = cp.asarray(d_pages)
            n = int(s_pages.size)
            grid = (min(n, 8192),)
            self._kernel(grid, (256,), (s_dev, d_dev, np.int64(n)))
            ev = cp.cuda.Event(block=False, disable_timing=True)
            ev.record(stream)
        job.marks.append((ev, d))
        job.keep += [s_dev, d_dev]  # alive until the launch completes

    def _poll(self, job: _CupyJob) -> bool:
        left = []
        for ev, d in job.marks:
            if ev.done:
                job.status[d] = DONE
            else:
                left.append((ev, d))
        job.marks = left
        return not left

    def wait(self, job: Job, timeout: float) -> bool:
        assert isinstance(job, _CupyJob)
        deadline = time.monotonic() + timeout
        pause = 20e-6
        while not self._poll(job):
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)
        return True

    def abort(self, job: Job) -> None:
        """Issued copies cannot be recalled: wait for them before the CPU takes over."""
        assert isinstance(job, _CupyJob)
        for s in job.streams:
            s.synchronize()
        self._poll(job)

    def close(self) -> None:
        if self.cp is None:
            return
        rt = self.cp.cuda.runtime
        for s in self.streams:
            s.synchronize()
        for ptr in list(self._registered):
            with contextlib.suppress(Exception):
                rt.hostUnregister(ptr)
        self._registered.clear()
        self.streams = []


@shipped()
class CupyDcbm(Dcbm):
    """``cupy``: DCBM over CUDA streams (see the module docstring)."""

    name = "cupy"
    options = dict(Dcbm.options)
    options.update(
        {
            "channels": Option(int, min=1, max=MAX_CHANNELS, help="CUDA streams (1..16)"),
            "device": Option(int, min=0, max=64, help="CUDA device id"),
            "path": Option(
                str,
                choices=("auto", "memcpy", "kernel"),
                help="memcpyAsync per descriptor, one copy kernel per channel, or auto",
            ),
        }
    )

    def __init__(
        self,
        channels: int = 4,
        timeout: float = 10.0,
        coalesce: bool = True,
        device: int = 0,
        path: str = "auto",
    ) -> None:
        if path not in ("auto", "memcpy", "kernel"):
            raise BadArgument(f"path: expected auto, memcpy or kernel, got {path!r}")
        super().__init__(channels, timeout, coalesce, engine=CupyEngine(device, path))
        self.device = device
        self.path = path

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, reason, _ = cuda_status()
        return ok, reason

    def can_access(self, node) -> bool:
        return getattr(node, "kind", "dram") in ("dram", "device")


__all__ = ["DONE", "FAILED", "CupyDcbm", "CupyEngine"]
