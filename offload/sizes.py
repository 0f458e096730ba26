"""Parsing and formatting of byte sizes such as ``256M`` or ``4K``."""

from __future__ import annotations

import re

from .errors import SpecError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int, what: str = "size") -> int:
    """Return the number of bytes in *text* (``"4K"``, ``"2M"``, ``"1G"``, ``"4096"``).

    Parameters
    ----------
    text : str or int
        A non-negative integer with an optional K/M/G/T suffix (powers of 1024).
    what : str
        The argument's name, used in the error message.

    Raises
    ------
    SpecError
        If *text* is not a size.
    """
    if isinstance(text, bool):
        raise SpecError(f"{what}: expected a size such as 4K or 256M, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise SpecError(f"{what}: size must not be negative, got {text}")
        return text
    if not isinstance(text, str):
        raise SpecError(f"{what}: expected a size such as 4K or 256M, got {type(text).__name__}")
    m = _SIZE_RE.match(text)
    if not m:
        raise SpecError(f"{what}: {text!r} is not a size (expected e.g. 4K, 2M, 256M, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(nbytes: int) -> str:
    """Format *nbytes* compactly (``4096 -> "4K"``, ``2097152 -> "2M"``)."""
    for unit in ("T", "G", "M", "K"):
        mult = _UNITS[unit]
        if nbytes >= mult and nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return str(nbytes)
