"""The migrate-reason mask of ``migrate_offload_register``: parsing and formatting."""

from __future__ import annotations

import errno

from .constants import MIGRATE_REASONS
from .errors import oserror

ALL_REASONS: int = (1 << len(MIGRATE_REASONS)) - 1


def parse_reasons(value: str | int) -> int:
    """Parse a reason mask: a number, ``"all"``, ``"none"`` or comma-separated names.

    Raises
    ------
    OSError
        EINVAL for an unknown name or a number with bits outside the known reasons.
    """
    if isinstance(value, bool):
        raise oserror(errno.EINVAL, f"reasons: expected a mask or names, got {value!r}")
    if isinstance(value, int):
        if value < 0 or value & ~ALL_REASONS:
            raise oserror(
                errno.EINVAL, f"reasons: mask {value:#x} has unknown bits (valid: {ALL_REASONS:#x})"
            )
        return value
    if not isinstance(value, str):
        raise oserror(errno.EINVAL, f"reasons: expected str or int, got {type(value).__name__}")
    text = value.strip().lower()
    if text == "all":
        return ALL_REASONS
    if text in ("none", ""):
        return 0
    try:
        return parse_reasons(int(text, 0))
    except ValueError:
        pass
    mask = 0
    for name in text.split(","):
        name = name.strip()
        if name not in MIGRATE_REASONS:
            raise oserror(
                errno.EINVAL,
                f"reasons: unknown migrate reason {name!r} (known: {', '.join(MIGRATE_REASONS)})",
            )
        mask |= 1 << MIGRATE_REASONS.index(name)
    return mask


def format_reasons(mask: int) -> str:
    """Format a mask as ``"all"``, ``"none"`` or comma-separated reason names."""
    if mask == ALL_REASONS:
        return "all"
    if mask == 0:
        return "none"
    return ",".join(r for i, r in enumerate(MIGRATE_REASONS) if mask >> i & 1)


def reason_bit(reason: str) -> int:
    """The mask bit of one reason name."""
    return 1 << MIGRATE_REASONS.index(reason)
