"""Keep the batched path's temporary arrays in the process's heap.

Every phase of a migration builds numpy temporaries of one element per folio: 512 KiB
for a batch of 65536. glibc hands blocks that large out with ``mmap`` and gives them
back with ``munmap`` when freed, so each call page-faults its temporaries in afresh;
on a VM a fault costs microseconds, and for 4 KiB folios those faults were most of the
engine's own cost (measured with the copy step removed, ``offload bench overhead``:
0.144 us per folio, 0.054 us with the temporaries kept). :func:`keep_temporaries`
raises glibc's mmap threshold to 32 MiB (its largest) and its trim threshold to
128 MiB, once per process, the first time a :class:`~offload.Machine` is made: blocks
below 32 MiB then come from the heap and are reused, and up to 128 MiB of free heap is
kept instead of being returned to the system at once. Node frames (hundreds of MiB) are
still mapped and unmapped on their own.

It changes the process's allocator for everything in it; set ``FOLIO_OFFLOAD_MALLOC=0``
to leave malloc as it is. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

#: glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap (glibc's largest allowed on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free heap kept before trimming.
TRIM_THRESHOLD = 128 << 20

_lock = threading.Lock()
_done: bool | None = None  # None: not tried yet


def keep_temporaries() -> bool:
    """Tune glibc's malloc as the module says (once); returns whether it is tuned."""
    global _done
    with _lock:
        if _done is None:
            _done = _tune()
        return _done


def _tune() -> bool:
    if os.environ.get("FOLIO_OFFLOAD_MALLOC", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_temporaries"]
