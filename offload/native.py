"""A compiled page copy for pages scattered on both sides, built on first use.

numpy copies pages scattered on both sides in two passes (a gather into a buffer, then
a scatter), which reaches about half of what one compiled loop of per-page ``memcpy``
does (measured: 2.9 vs 5.4 GB/s for 64K random 4 KiB pages on the development VM).
This module compiles that loop with the host's C compiler the first time it is needed
(a few hundred milliseconds), caches the shared library per user, and calls it through
ctypes, which releases the GIL, so that copy threads run in parallel. Where no compiler
is found, or ``FOLIO_OFFLOAD_NATIVE=0`` is set, :func:`copy_pages` is None and callers
use the numpy path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .constants import PAGE_SIZE
from .errors import BadArgument

SOURCE = r"""
#include <stdint.h>
#include <string.h>
/* dst[dp[i]] = src[sp[i]] for i < n, pages of PAGE bytes */
void copy_pages(char *dst, const char *src, const int64_t *dp, const int64_t *sp, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + dp[i] * %(page)d, src + sp[i] * %(page)d, %(page)d);
}
""" % {"page": PAGE_SIZE}  # noqa: UP031 - C source with braces

_lock = threading.Lock()
_lib: Any = None  # None: not tried yet; False: not available


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "folio-offload"


def _build() -> object:
    if os.environ.get("FOLIO_OFFLOAD_NATIVE", "1") == "0":
        return False
    tag = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    lib = _cache_dir() / f"pagecopy-{tag}.so"
    if not lib.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return False
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "pagecopy.c"
                src.write_text(SOURCE)
                out = Path(tmp) / "pagecopy.so"
                r = subprocess.run(
                    [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                    capture_output=True,
                    timeout=60,
                )
                if r.returncode:
                    return False
                os.replace(out, lib)  # atomic: concurrent builders do not clash
        except (OSError, subprocess.SubprocessError):
            return False
    try:
        handle = ctypes.CDLL(str(lib))
    except OSError:
        return False
    fn = handle.copy_pages
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64]
    fn.restype = None
    return fn


def available() -> bool:
    """Whether the compiled page copy can be used here (builds it on first call)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _build()
    return _lib is not False


def copy_pages(dst: np.ndarray, src: np.ndarray, dpfn: np.ndarray, spfn: np.ndarray) -> bool:
    """``dst[dpfn] = src[spfn]`` for host frames, in one compiled pass.

    Returns False (having copied nothing) where the compiled copy is not available.
    Frames must be C-contiguous ``(nr_pages, PAGE_SIZE)`` uint8 arrays (else False);
    page numbers are checked against them (IndexError), since the loop has no bounds.
    """
    if not available():
        return False
    dp = np.ascontiguousarray(dpfn, dtype=np.int64)
    sp = np.ascontiguousarray(spfn, dtype=np.int64)
    for frames, pf in ((dst, dp), (src, sp)):
        if (
            frames.dtype != np.uint8
            or frames.ndim != 2
            or frames.shape[1] != PAGE_SIZE
            or not frames.flags.c_contiguous
        ):
            return False
        if pf.size and (int(pf.min()) < 0 or int(pf.max()) >= frames.shape[0]):
            raise IndexError("copy_pages: a page frame number is out of range")
    if dp.size != sp.size:
        raise BadArgument("copy_pages: as many destination as source pages are needed")
    _lib(dst.ctypes.data, src.ctypes.data, dp.ctypes.data, sp.ctypes.data, dp.size)
    return True


__all__ = ["SOURCE", "available", "copy_pages"]
