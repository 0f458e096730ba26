"""The series' published figures, shown beside ours as reference rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import RenderableType

#: Where the figures come from.
SOURCE = (
    '"Accelerate page migration with batch copying and hardware offload", RFC v4 '
    "(2026-03): move_pages of 1 GB between the two nodes of a 2-socket AMD Zen 3 EPYC "
    "(32 cores), PTDMA engine; GB/s, mean"
)

SIZES = (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20)

#: row label -> GB/s per folio size, as published
PUBLISHED = {
    "vanilla (serial copy)": (3.55, 5.66, 6.16, 7.12, 6.93, 10.88),
    "DMA, 1 channel": (2.63, 2.92, 3.16, 4.75, 7.38, 12.64),
    "DMA, 2 channels": (3.20, 4.68, 5.16, 7.42, 8.05, 14.40),
    "DMA, 4 channels": (3.78, 6.45, 7.36, 9.70, 11.68, 27.16),
}


def rows(sizes: list[int]) -> dict[str, dict[int, float]]:
    """Published GB/s by row and folio size, for the sizes that were published."""
    out = {}
    for label, vals in PUBLISHED.items():
        out[label] = {s: v for s, v in zip(SIZES, vals) if s in sizes}
    return out


def table(sizes: list[int]) -> RenderableType:
    """The reference rows, with each ratio to the published vanilla row."""
    from offload.console import table as make_table
    from offload.sizes import format_size

    ref = rows(sizes)
    base = ref["vanilla (serial copy)"]
    lines = []
    for label, vals in ref.items():
        cells = [label]
        for s in sizes:
            v = vals.get(s)
            if v is None:
                cells.append("-")
            elif label.startswith("vanilla"):
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.2f} x{v / base[s]:.2f}")
        lines.append(cells)
    return make_table(
        ["published (kernel)"] + [format_size(s) for s in sizes],
        lines,
        caption=f"source: {SOURCE}",
    )
