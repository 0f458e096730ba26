"""The migrate-reason mask of ``migrate_offload_register``: parsing and formatting."""

from __future__ import annotations

import errno

from .constants import MIGRATE_REASONS
from .errors import oserror

ALL_REASONS: int = (1 << len(MIGRATE_REASONS)) - 1


#: Names that are not the kernel's but say the same: NUMA balancing promotes a folio
#: from a slow tier with ``migrate_misplaced_folio``, whose reason is MR_NUMA_MISPLACED.
ALIASES = {"promotion": "numa_misplaced"}


def parse_reasons(value: str | int | tuple[str, ...] | list[str]) -> int:
    """Parse a reason mask: a number, ``"all"``, ``"none"``, comma-separated names, or
    a tuple or list of names (``promotion`` is ``numa_misplaced``).

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
    if isinstance(value, (tuple, list)):
        if not value or not all(isinstance(v, str) for v in value):
            raise oserror(errno.EINVAL, f"reasons: expected names, got {value!r}")
        value = ",".join(value)
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
        name = ALIASES.get(name.strip(), name.strip())
        if name not in MIGRATE_REASONS:
            raise oserror(
                errno.EINVAL,
                f"reasons: unknown migrate reason {name!r} (known: {', '.join(MIGRATE_REASONS)}; "
                "promotion = numa_misplaced)",
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
