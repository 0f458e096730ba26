"""Page access that works for host (numpy) and device (CuPy) frames alike.

Host frames are numpy arrays; the frames of a ``device`` node are a CuPy array. CuPy is
imported only when device frames are actually touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .batch import FolioBatch


def on_device(frames: Any) -> bool:
    """Whether *frames* live in GPU memory (a CuPy array)."""
    return not isinstance(frames, np.ndarray)


def _cp() -> Any:
    import cupy

    return cupy


def allocate(kind: str, nr_pages: int, page_size: int) -> Any:
    """Zeroed frames for a node of *kind* (``dram``: numpy; ``device``: CuPy)."""
    if kind == "device":
        return _cp().zeros((nr_pages, page_size), dtype=np.uint8)
    from . import native

    return native.frames(nr_pages, page_size)  # starting on a page boundary


def gather(frames: Any, pfns: np.ndarray) -> np.ndarray:
    """Rows *pfns* of *frames* as a new host array."""
    if not on_device(frames):
        return frames[pfns]
    cp = _cp()
    return cp.asnumpy(frames[cp.asarray(pfns)])


def gather_words(frames: Any, pfns: np.ndarray) -> np.ndarray:
    """Rows *pfns* as 64-bit words (a host array), for fast comparison."""
    rows = gather(frames, pfns)
    return rows.view(np.uint64) if rows.size else rows.reshape(0, 0).view(np.uint64)


def scatter(frames: Any, pfns: np.ndarray, rows: Any) -> None:
    """Write host *rows* into rows *pfns* of *frames*."""
    if not on_device(frames):
        frames[pfns] = rows
        return
    cp = _cp()
    frames[cp.asarray(pfns)] = cp.asarray(rows)


def write_partial(frames: Any, pfn: int, off: int, buf: np.ndarray) -> None:
    """Write *buf* at byte *off* of page *pfn*."""
    if not on_device(frames):
        frames[pfn, off : off + buf.size] = buf
        return
    frames[int(pfn), off : off + buf.size] = _cp().asarray(buf)


def zero(frames: Any, pages: np.ndarray) -> None:
    """Zero rows *pages*."""
    if not on_device(frames):
        frames[pages] = 0
        return
    frames[_cp().asarray(pages)] = 0


def copy_pages(
    memory: Mapping[int, Any],
    src_node: np.ndarray,
    src_pfn: np.ndarray,
    dst_node: np.ndarray,
    dst_pfn: np.ndarray,
) -> None:
    """Copy pages one for one between any frames (host or device), grouped by node pair."""
    pair = src_node.astype(np.int64) * 65536 + dst_node
    for key in np.unique(pair):
        sel = pair == key
        src, dst = memory[int(key // 65536)], memory[int(key % 65536)]
        if not on_device(src) and not on_device(dst):
            copy_host_pages(dst, src, dst_pfn[sel], src_pfn[sel])
        elif on_device(src) and on_device(dst):
            cp = _cp()
            dst[cp.asarray(dst_pfn[sel])] = src[cp.asarray(src_pfn[sel])]
        elif on_device(dst):
            scatter(dst, dst_pfn[sel], src[src_pfn[sel]])
        else:
            dst[dst_pfn[sel]] = gather(src, src_pfn[sel])


#: pages per buffer of the numpy fallback (small enough to stay in the CPU's caches)
_CHUNK = 64


def copy_host_pages(dst: np.ndarray, src: np.ndarray, dpfn: np.ndarray, spfn: np.ndarray) -> None:
    """``dst[dpfn] = src[spfn]`` for host frames: one compiled pass where a C compiler is
    available (``offload.native``), else a gather into a cache-sized buffer and a
    scatter from it, chunk by chunk."""
    from . import native

    if native.copy_pages(dst, src, dpfn, spfn):
        return
    n = spfn.size
    if n <= _CHUNK:
        dst[dpfn] = src[spfn]
        return
    buf = np.empty((_CHUNK, src.shape[1]), dtype=src.dtype)
    for lo in range(0, n, _CHUNK):
        s, d = spfn[lo : lo + _CHUNK], dpfn[lo : lo + _CHUNK]
        t = buf[: s.size]
        np.take(src, s, axis=0, out=t, mode="clip")
        dst[d] = t


def copy_folios(batch: FolioBatch) -> None:
    """Copy every folio of a ``FolioBatch`` page by page, whatever memory it is in."""
    copy_pages(batch.memory, *batch.pages())


def copy_runs(
    memory: Mapping[int, Any],
    src_node: np.ndarray,
    src_pfn: np.ndarray,
    dst_node: np.ndarray,
    dst_pfn: np.ndarray,
    npages: np.ndarray,
) -> None:
    """Copy contiguous runs of host pages, one memcpy each: in one compiled call where
    :mod:`offload.native` is available (it releases the GIL), else one ``np.copyto`` a
    run (numpy releases it too)."""
    from . import native

    if len(npages) > 1 and int(np.min(npages)) > 0:  # one run is one memcpy either way
        rc = native.runs(memory, src_node, src_pfn, dst_node, dst_pfn, npages)
        if rc is not None:
            rc.run()
            return
    for sn, sp, dn, dp, k in zip(
        src_node.tolist(), src_pfn.tolist(), dst_node.tolist(), dst_pfn.tolist(), npages.tolist()
    ):
        np.copyto(memory[dn][dp : dp + k], memory[sn][sp : sp + k])
