"""User addresses and lengths, judged as the kernel judges them.

Python integers have no width; the kernel's arguments do. An address is a 64-bit
pointer and a length a ``size_t``, so a value the C types cannot hold is a bad argument
here (naming it), and a value they can hold gets the kernel's answer: ``munmap`` past
the end of the address space is EINVAL with nothing unmapped (``do_vmi_munmap``), and a
``move_pages`` entry at or above 2**63 is the pointer of that bit pattern (``-EFAULT``
in its status, as for any address outside every mapping).
"""

from __future__ import annotations

import numpy as np

from .constants import PAGE_SIZE, TASK_SIZE
from .errors import BadArgument, BadArgumentType, BadRange, check_int

#: One past the largest 64-bit address or length.
U64_LIMIT = 1 << 64


def user_addr(value: object, name: str = "addr") -> int:
    """An address argument: an int in ``[0, 2**64)``.

    Raises
    ------
    BadArgumentType, BadArgument
        Not an integer; negative, or too large for a pointer.
    """
    v = check_int(value, name, minimum=0)
    if v >= U64_LIMIT:
        raise BadArgument(f"{name}: {v:#x} does not fit in a 64-bit address")
    return v


def munmap_range(addr: object, length: object) -> tuple[int, int]:
    """The ``[start, end)`` that ``munmap(addr, length)`` unmaps.

    As ``do_vmi_munmap``: the start must be page aligned and ``start <= TASK_SIZE``,
    the length at most ``TASK_SIZE - start`` and not zero (a negative length is a huge
    ``size_t``); the length is rounded up to whole pages.

    Raises
    ------
    BadArgumentType
        Not integers.
    BadRange
        EINVAL, naming the argument; nothing is unmapped.
    """
    start = check_int(addr, "addr")
    n = check_int(length, "length")
    if start % PAGE_SIZE:
        raise BadRange(f"addr: {start:#x} is not a multiple of the page size {PAGE_SIZE}")
    if not 0 <= start <= TASK_SIZE:
        raise BadRange(f"addr: {start:#x} is outside the user address space [0, {TASK_SIZE:#x}]")
    if n <= 0 or n > TASK_SIZE - start:
        why = (
            "must be more than 0"
            if n <= 0
            else f"runs past the end of the user address space ({TASK_SIZE:#x})"
        )
        raise BadRange(f"length: {n:#x} from {start:#x} {why}")
    return start, start + -(-n // PAGE_SIZE) * PAGE_SIZE


def _all_ints(seq: list) -> bool:
    return all(type(v) is int or isinstance(v, np.integer) for v in seq)


def int_array(values: object, name: str, *, pointers: bool = False) -> np.ndarray:
    """*values* (a flat sequence or array of ints) as int64, or an error naming *name*.

    With *pointers*, every value a 64-bit pointer can hold is accepted, ``[-2**63,
    2**64)``, and given as the int64 of the same bits (values from 2**63 up read as
    negative: no user address, as in the kernel); else values must fit in int64.

    Raises
    ------
    BadArgumentType
        Not a flat sequence of integers, or a value out of that range.
    """
    if (
        isinstance(values, (str, bytes, bytearray))
        or values is None
        or not hasattr(values, "__iter__")
        or (isinstance(values, np.ndarray) and values.ndim == 0)
    ):
        raise BadArgumentType(
            f"{name}: expected a sequence of integers, got {type(values).__name__}"
        )
    seq = None
    try:
        if isinstance(values, np.ndarray):
            arr = values
        else:
            seq = list(values)
            arr = np.asarray(seq)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadArgument(f"{name}: expected a flat sequence of integers ({exc})") from None
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if seq is not None and arr.ndim == 1 and arr.dtype.kind in "fO" and _all_ints(seq):
        # Python ints past int64 made numpy fall back to floats or objects
        big = [int(v) for v in seq]
        lo = -(1 << 63)
        hi = U64_LIMIT if pointers else 1 << 63
        bad = next((v for v in big if not lo <= v < hi), None)
        if bad is not None:
            what = "a 64-bit pointer" if pointers else "int64"
            raise BadArgumentType(f"{name}: {bad} does not fit in {what}")
        return np.array([v & (U64_LIMIT - 1) for v in big], dtype=np.uint64).view(np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise BadArgumentType(
            f"{name}: expected a flat sequence of integers, got dtype "
            f"{arr.dtype} and shape {arr.shape}"
        )
    if arr.dtype == np.uint64:
        if pointers:
            return arr.view(np.int64)
        if arr.max() > np.iinfo(np.int64).max:
            raise BadArgument(f"{name}: values out of range")
    return arr.astype(np.int64, copy=False)


__all__ = ["U64_LIMIT", "int_array", "munmap_range", "user_addr"]
