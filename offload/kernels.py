"""The kernel versions the model follows, and the behaviours that differ between them.

Each behaviour that changed between the kernels people run is one named switch here,
with the release that changed it and the evidence. ``Machine(kernel="6.1")`` (or
``"6.12"``, ``"7.2"``; default :data:`DEFAULT_KERNEL`, the newest supported) selects
them; ``offload kernel-check --kernel IMAGE`` builds the model machine for the version
in the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BadArgument, BadArgumentType

#: The versions checked against a real kernel (Debian 12, 13 and sid), oldest first.
SUPPORTED_KERNELS: tuple[str, ...] = ("6.1", "6.12", "7.2")
#: What ``Machine()`` follows when no kernel is named: the newest supported.
DEFAULT_KERNEL: str = SUPPORTED_KERNELS[-1]


def parse_version(text: str) -> tuple[int, int]:
    """``"6.12.117+deb13-amd64"`` -> (6, 12).

    Raises
    ------
    BadArgument
        When *text* does not start with MAJOR.MINOR.
    """
    if not isinstance(text, str):
        raise BadArgumentType(f"kernel: expected a version string, got {type(text).__name__}")
    m = re.match(r"\s*(\d+)\.(\d+)", text)
    if not m:
        raise BadArgument(f"kernel: {text!r} is not a kernel version such as '6.12'")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Switch:
    """One behaviour that changed: on from kernel *since* (MAJOR, MINOR)."""

    name: str
    since: tuple[int, int]
    what: str
    evidence: str


#: Every version-specific behaviour of the model, in one place.
SWITCHES: tuple[Switch, ...] = (
    Switch(
        "untouched_enoent",
        (6, 12),
        "move_pages reports a never-touched page (no page table entry) as -ENOENT; "
        "before, as -EFAULT",
        "do_pages_stat_array moved from follow_page(FOLL_DUMP) to folio_walk in 6.12; "
        "kernel-check: -EFAULT on 6.1.0, -ENOENT on 6.12.117 and 7.2.13",
    ),
    Switch(
        "shared_per_folio",
        (6, 9),
        "move_pages and migrate_pages judge a large folio shared (-EACCES, or skipped, "
        "without MPOL_MF_MOVE_ALL) when another process maps any page of it; before, by "
        "the mapcount of the page named (page_mapcount)",
        "'mm/migrate: use folio_likely_mapped_shared() in add_page_for_migration()' "
        "(6.9), folio_maybe_mapped_shared() since 6.15; kernel-check "
        "fork_thp_child_unmaps_half: the THP moves on 6.1.0, -EACCES on 6.12.117 and 7.2.13",
    ),
    Switch(
        "split_partly_mapped_thp",
        (6, 10),
        "a large folio on the deferred split list (partly unmapped) is split when a "
        "migration takes it, counted thp_migration_fail and thp_migration_split, and "
        "only its mapped pages move; before, it migrated whole",
        "mm/migrate.c migrate_pages_batch, 'the rare folio on the deferred split list "
        "should be split now' (6.10); kernel-check thp_half_unmapped on 6.12.117, 7.2.13",
    ),
    Switch(
        "split_maps_zero_pages",
        (6, 12),
        "splitting an isolated anonymous THP maps its zero-filled pages to the shared "
        "zero page (they query -EFAULT and stop holding frames)",
        "'mm: remap unused subpages to shared zeropage when splitting isolated thp' "
        "(6.12); kernel-check thp_half_unmapped on 6.12.117 and 7.2.13",
    ),
    Switch(
        "huge_zero_write_thp",
        (7, 0),
        "a write into a slot mapped by the huge zero page faults in a whole THP; "
        "before, one 4 KiB page",
        "kernel-check query_huge_zero_then_write: a 4 KiB page on 6.1.0 and 6.12.117, "
        "a THP on 7.2.13 (the change lies between 6.13 and 7.2; set at 7.0)",
    ),
)


@dataclass(frozen=True)
class Kernel:
    """A kernel version and the behaviours it has (one attribute per :data:`SWITCHES`).

    Create with :func:`kernel`.
    """

    version: str
    untouched_enoent: bool
    shared_per_folio: bool
    split_partly_mapped_thp: bool
    split_maps_zero_pages: bool
    huge_zero_write_thp: bool

    def describe(self) -> list[str]:
        """One line per switch: on or off here, and what it is."""
        return [
            f"{s.name}: {'on' if getattr(self, s.name) else 'off'} (since {s.since[0]}."
            f"{s.since[1]}): {s.what}"
            for s in SWITCHES
        ]


def kernel(version: str | None = None) -> Kernel:
    """The behaviours of kernel *version* (``"6.1"``, ``"6.12.117+deb13"``, ...; None:
    :data:`DEFAULT_KERNEL`).

    Raises
    ------
    BadArgument
        Not a version, or older than the oldest supported (6.1).
    """
    text = DEFAULT_KERNEL if version is None else version
    v = parse_version(text)
    if v < parse_version(SUPPORTED_KERNELS[0]):
        raise BadArgument(
            f"kernel: {text!r} is older than the oldest the model follows "
            f"({SUPPORTED_KERNELS[0]}; supported: {', '.join(SUPPORTED_KERNELS)})"
        )
    on = {s.name: v >= s.since for s in SWITCHES}
    return Kernel(version=f"{v[0]}.{v[1]}", **on)


def image_version(path: str | Path) -> str | None:
    """The release string in an x86 kernel image (bzImage): the header's
    ``kernel_version`` pointer (offset 0x20E) names it, 0x200 bytes further on. None
    when *path* is no such image."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    ptr = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    end = head.find(b"\0", ptr)
    if ptr >= len(head) or end < 0:
        return None
    text = head[ptr:end].decode("ascii", "replace").split(" ")[0]
    return text or None


__all__ = [
    "DEFAULT_KERNEL",
    "SUPPORTED_KERNELS",
    "SWITCHES",
    "Kernel",
    "Switch",
    "image_version",
    "kernel",
    "parse_version",
]
