"""``cupy``: DCBM whose channels are non-blocking CUDA streams (the GPU's copy engines).

Three ways to issue a channel's descriptors: ``memcpy``, a ``cudaMemcpyAsync`` each;
``kernel``, one gather/scatter kernel launch that copies every page of the channel,
reading and writing pinned host memory directly; ``batch``, one ``cuMemcpyBatchAsync``
(CUDA 12.8+, through ``cuda.bindings``; CuPy does not wrap it) for all of them. ``auto``
takes the kernel for channels of many small descriptors, else one memcpy each. Host (``dram``)
nodes are page-locked (``cudaHostRegister``) while the engine uses them, so that the copy
engines reach them; ``device`` nodes are CuPy arrays. Completion is tracked with CUDA
events, and the timeout by polling them. CuPy is imported only when the engine opens.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from offload.constants import PAGE_SHIFT, PAGE_SIZE
from offload.costmodel import CallCost
from offload.errors import BackendUnavailable, BadArgument, SpecError
from offload.migrator import Option, shipped

from .driver import Dcbm
from .engine import DONE, FAILED, DmaEngine, Job
from .plan import MAX_CHANNELS, Plan
from .probe import cuda_status

#: cudaMemcpyDefault: the direction follows from the (unified) addresses.
MEMCPY_DEFAULT = 4
#: cudaHostRegisterPortable | cudaHostRegisterMapped
HOST_REGISTER_FLAGS = 1 | 2
#: What ``auto`` predicts a channel costs on each path, until a GPU check has measured
#: them (``costs=FILE``): ``fixed + per_folio * descriptors + bytes / bandwidth``.
#: memcpy: ~2.3 us per cudaMemcpyAsync call, ~55 GB/s over PCIe Gen5 (nvbandwidth, H100);
#: kernel: a launch and the page list, ~12.6 GB/s gathering 4 KiB pages from pinned
#: memory (the best published, A100); batch: a call per channel, a little per copy, the
#: copy engines' bandwidth. Anchors from the literature, not measurements of ours.
DEFAULT_COSTS = {
    "memcpy": CallCost(0.0, 2.3e-6, 55.0),
    "kernel": CallCost(15e-6, 0.01e-6, 12.6),
    "batch": CallCost(8e-6, 0.3e-6, 50.0),
}
#: Descriptors per CUDA event on the memcpy and batch paths (completion granularity).
EVENT_EVERY = 32
#: The issue paths.
PATHS = ("auto", "memcpy", "kernel", "batch")
BATCH_INSTALL = "pip install 'cuda-bindings>=12.8' (and an NVIDIA driver for CUDA 12.8+)"


def batch_status() -> tuple[bool, str]:
    """Whether ``cuMemcpyBatchAsync`` can be called from here, and why not. Asks only
    whether ``cuda.bindings.driver`` imports and has it (not the driver: that is found
    at the first call, whose failure leaves the channel to the CPU)."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        return False, f"cuda.bindings is not installed ({exc}): {BATCH_INSTALL}"
    if not hasattr(driver, "cuMemcpyBatchAsync"):
        return False, f"this cuda.bindings has no cuMemcpyBatchAsync (CUDA < 12.8): {BATCH_INSTALL}"
    return True, ""


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


def page_addresses(
    src: np.ndarray, dst: np.ndarray, npages: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every base page's source and destination address of descriptors starting at
    *src* / *dst* and *npages* pages long (what the gather kernel reads), vectorised."""
    npg = npages.astype(np.int64)
    steps = np.arange(int(npg.sum()), dtype=np.uint64)
    first = np.repeat(np.cumsum(npg) - npg, npg).astype(np.uint64)
    offs = (steps - first) << np.uint64(PAGE_SHIFT)
    return np.repeat(src, npg) + offs, np.repeat(dst, npg) + offs


class _CupyJob(Job):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.marks: list[tuple[Any, np.ndarray]] = []  # (event, descriptor indices)
        self.streams: list = []
        self.keep: list = []  # device buffers a launch still reads
        self.paths: dict[str, int] = {}  # channels issued on each path


class CupyEngine(DmaEngine):
    """DMA channels as CUDA streams on one device.

    Parameters
    ----------
    device : int
        CUDA device id.
    path : {"auto", "memcpy", "kernel", "batch"}
        ``memcpy``: one cudaMemcpyAsync per descriptor; ``kernel``: one gather/scatter
        launch per channel; ``batch``: one cuMemcpyBatchAsync per channel (per
        ``EVENT_EVERY`` descriptors); ``auto``: per channel, the path of least
        predicted time (:attr:`costs`).
    costs : dict, optional
        Per path, its :class:`~offload.costmodel.CallCost` (default
        :data:`DEFAULT_COSTS`; ``offload gpu-check`` measures them).
    """

    def __init__(
        self, device: int = 0, path: str = "auto", costs: dict[str, CallCost] | None = None
    ) -> None:
        self.device = device
        self.path = path
        #: per path, the cost ``auto`` predicts a channel to take
        self.costs = dict(DEFAULT_COSTS if costs is None else costs)
        self.last_paths: dict[str, int] = {}
        #: the last failure to issue (its descriptors went to the CPU), for reports
        self.last_error: str | None = None
        self.cp: Any = None
        self.streams: list = []
        #: host address -> (device address, the array pinned there, kept until close)
        self._registered: dict[int, tuple[int, np.ndarray]] = {}
        self._kernel: Any = None
        self._driver: Any = None

    def open(self, channels: int) -> None:
        import cupy

        self.cp = cupy
        if self.path == "batch":
            self._batch_ok()  # cuda.bindings now, not at the first batch
        with cupy.cuda.Device(self.device):
            self.streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(channels)]
            self._kernel = cupy.RawKernel(_KERNEL, "copy_pages")

    def can_access(self, node) -> bool:
        return getattr(node, "kind", "dram") in ("dram", "device")

    # -- memory -------------------------------------------------------------------------
    def _base(self, frames) -> int:
        """Device-usable base address of a node's frames (pinning host frames once).

        The array is kept until :meth:`close` unpins it: registrations are looked up by
        address, and a pinned buffer freed early (a calibration's scratch) could see its
        address handed to a new array, which would then pass for pinned while the
        device reached the old pages."""
        if isinstance(frames, np.ndarray):
            ptr = frames.ctypes.data
            if ptr not in self._registered:
                rt = self.cp.cuda.runtime
                rt.hostRegister(ptr, frames.nbytes, HOST_REGISTER_FLAGS)
                try:
                    dev = rt.pointerGetAttributes(ptr).devicePointer or ptr
                except Exception:
                    dev = ptr  # unified addressing: the host pointer works on the device
                self._registered[ptr] = (dev, frames)
            return self._registered[ptr][0]
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
    def choose(self, descriptors: int, nbytes: int) -> str:
        """The path for a channel of *descriptors* descriptors and *nbytes* bytes: the
        one given, or with ``auto`` the one of least predicted time (``batch`` only
        where cuda.bindings has it)."""
        if self.path != "auto":
            return self.path
        paths = [p for p in ("memcpy", "kernel", "batch") if p in self.costs]
        if "batch" in paths and not self._batch_ok():
            paths.remove("batch")
        return min(paths, key=lambda p: float(self.costs[p].time(descriptors, nbytes)))

    def _batch_ok(self) -> bool:
        if self._driver is None:
            ok, _ = batch_status()
            if not ok:
                return False
            from cuda.bindings import driver

            self._driver = driver
        return True

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
                    path = self.choose(d.size, int(plan.npages[d].sum()) << PAGE_SHIFT)
                    job.paths[path] = job.paths.get(path, 0) + 1
                    if path == "batch":
                        self._issue_batch(plan, d, src, dst, stream, job)
                    elif path == "kernel":
                        self._issue_kernel(plan, d, src, dst, stream, job)
                    else:
                        self._issue_memcpy(plan, d, src, dst, stream, job)
                    issued[d] = True
        except Exception as exc:
            job.status[~issued] = FAILED  # what was not issued falls back to the CPU
            self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_paths = job.paths
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

    def _issue_batch(self, plan, d, src, dst, stream, job) -> None:
        """One cuMemcpyBatchAsync per EVENT_EVERY descriptors (its completion grain), all
        in stream order (the sources are pinned host or device memory)."""
        drv = self._driver
        attr = drv.CUmemcpyAttributes()
        attr.srcAccessOrder = drv.CUmemcpySrcAccessOrder.CU_MEMCPY_SRC_ACCESS_ORDER_STREAM
        handle = drv.CUstream(stream.ptr)
        nbytes = (plan.npages[d] << PAGE_SHIFT).tolist()
        srcs, dsts = src.tolist(), dst.tolist()
        for lo in range(0, d.size, EVENT_EVERY):
            hi = min(lo + EVENT_EVERY, d.size)
            out = drv.cuMemcpyBatchAsync(
                [drv.CUdeviceptr(x) for x in dsts[lo:hi]],
                [drv.CUdeviceptr(x) for x in srcs[lo:hi]],
                nbytes[lo:hi],
                hi - lo,
                [attr],
                [0],
                1,
                handle,
            )
            err = out[0] if isinstance(out, tuple) else out
            if int(err) != int(drv.CUresult.CUDA_SUCCESS):
                raise RuntimeError(f"cuMemcpyBatchAsync failed: {err!r}")
            ev = self.cp.cuda.Event(block=False, disable_timing=True)
            ev.record(stream)
            job.marks.append((ev, d[lo:hi]))

    def _issue_kernel(self, plan, d, src, dst, stream, job) -> None:
        cp = self.cp
        s_pages, d_pages = page_addresses(src, dst, plan.npages[d])
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


def load_costs(path: str) -> dict[str, CallCost]:
    """Per-path costs from a JSON file ``{"memcpy": {"fixed_us": .., "per_folio_us": ..,
    "gbps": ..}, ...}`` (what ``offload gpu-check`` writes as ``cupy-costs.json``).

    Raises
    ------
    SpecError
        A file that cannot be read, or an entry that is not such a cost.
    """
    try:
        raw = json.loads(Path(path).read_text())
        out = {}
        for name, c in raw.items():
            if name not in PATHS or name == "auto":
                raise ValueError(f"unknown path {name!r}")
            gbps = c.get("gbps")
            out[name] = CallCost(
                float(c["fixed_us"]) * 1e-6,
                float(c["per_folio_us"]) * 1e-6,
                float("inf") if gbps is None else float(gbps),
            )
        if not out:
            raise ValueError("no path in it")
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SpecError(f"costs: cannot use {path!r}: {exc}") from None


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
                choices=PATHS,
                help="memcpyAsync per descriptor, one copy kernel per channel, one "
                "cuMemcpyBatchAsync per channel (CUDA 12.8+, cuda.bindings), or auto",
            ),
            "costs": Option(
                str,
                help="JSON file of per-path costs for auto (offload gpu-check writes one)",
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
        costs: str | None = None,
    ) -> None:
        if path not in PATHS:
            raise BadArgument(f"path: expected one of {', '.join(PATHS)}, got {path!r}")
        if path == "batch":
            ok, why = batch_status()
            if not ok:
                raise BackendUnavailable(f"cupy path=batch: {why}")
        table = None if costs is None else load_costs(costs)
        super().__init__(channels, timeout, coalesce, engine=CupyEngine(device, path, table))
        self.device = device
        self.path = path
        self.costs = costs

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, reason, _ = cuda_status()
        return ok, reason

    def can_access(self, node) -> bool:
        return getattr(node, "kind", "dram") in ("dram", "device")


__all__ = [
    "DEFAULT_COSTS",
    "DONE",
    "FAILED",
    "PATHS",
    "CupyDcbm",
    "CupyEngine",
    "batch_status",
    "load_costs",
]
