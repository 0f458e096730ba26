"""The RFC V3 throughput table of the series, as published, for ``offload predict``.

"Accelerate page migration with batch copying and hardware offload", RFC V3 cover letter
(2025-09-23): move_pages() of 1 GB between the two NUMA nodes of a Zen 3 EPYC server,
kernel 6.16.0-rc6, PTDMA engine. GB/s, mean and standard deviation, by engine and width:
``baseline`` (the vanilla kernel, one CPU), ``mtcopy`` (multi-threaded CPU copy; width =
threads), ``dcbm`` (the DMA driver; width = channels). The same letter puts the copy at
under 1% of a one-4K-page move_pages, ~35% for 512 4K pages, ~66% for one 2M page and
~97% for 512 2M pages.
"""

from __future__ import annotations

SOURCE = (
    '"Accelerate page migration with batch copying and hardware offload", RFC V3 '
    "(2025-09-23): move_pages of 1 GB between the two nodes of a Zen 3 EPYC, 6.16.0-rc6, "
    "PTDMA engine; GB/s, mean"
)

#: folio sizes of the columns, bytes
SIZES = (4096, 16384, 65536, 131072, 262144, 524288, 1048576, 2097152)

#: (engine, width) -> (GB/s mean per size, standard deviation per size)
TABLE: dict[tuple[str, int], tuple[tuple[float, ...], tuple[float, ...]]] = {
    ("baseline", 1): (
        (3.73, 5.53, 5.90, 6.34, 6.50, 6.86, 6.92, 10.67),
        (0.33, 0.36, 0.56, 0.08, 0.05, 0.61, 0.71, 0.36),
    ),
    ("mtcopy", 1): (
        (3.84, 5.23, 6.01, 6.34, 7.16, 7.12, 7.10, 10.94),
        (0.10, 0.31, 0.55, 0.60, 1.00, 0.78, 0.86, 0.13),
    ),
    ("mtcopy", 2): (
        (4.04, 6.72, 7.68, 8.15, 8.45, 9.29, 9.87, 17.80),
        (0.19, 0.38, 0.12, 0.06, 0.09, 0.17, 1.01, 0.12),
    ),
    ("mtcopy", 4): (
        (4.72, 8.41, 10.08, 11.44, 10.45, 12.60, 12.38, 31.41),
        (0.21, 0.70, 1.67, 2.42, 0.17, 1.97, 1.73, 1.14),
    ),
    ("mtcopy", 8): (
        (4.91, 8.62, 10.40, 13.94, 11.03, 14.96, 12.84, 33.50),
        (0.28, 0.13, 0.20, 3.75, 0.61, 3.29, 0.63, 3.29),
    ),
    ("mtcopy", 12): (
        (4.84, 8.75, 10.16, 10.92, 11.72, 14.02, 14.09, 34.70),
        (0.24, 0.08, 0.26, 0.22, 0.14, 2.51, 2.65, 2.38),
    ),
    ("mtcopy", 16): (
        (4.77, 8.95, 10.36, 11.03, 11.58, 13.88, 13.00, 35.89),
        (0.22, 0.69, 0.26, 0.22, 0.30, 2.71, 0.75, 2.07),
    ),
    ("dcbm", 1): (
        (2.75, 2.86, 3.28, 4.57, 5.03, 4.69, 4.78, 12.50),
        (0.19, 0.13, 0.20, 0.72, 0.62, 0.25, 0.34, 0.24),
    ),
    ("dcbm", 2): (
        (3.35, 4.57, 5.35, 6.71, 7.40, 7.38, 7.21, 14.23),
        (0.19, 0.19, 0.55, 0.71, 1.07, 0.61, 0.73, 0.34),
    ),
    ("dcbm", 4): (
        (4.01, 6.36, 7.71, 9.40, 10.27, 10.60, 12.35, 26.84),
        (0.17, 0.26, 0.89, 1.35, 1.96, 1.42, 2.64, 0.91),
    ),
    ("dcbm", 8): (
        (4.46, 7.74, 9.72, 10.88, 12.12, 15.62, 13.29, 45.27),
        (0.16, 0.13, 1.29, 0.16, 2.54, 3.96, 2.65, 2.60),
    ),
    ("dcbm", 12): (
        (4.60, 8.90, 11.26, 16.00, 14.90, 14.57, 13.79, 59.94),
        (0.22, 0.84, 2.19, 4.41, 4.38, 2.84, 3.18, 4.19),
    ),
    ("dcbm", 16): (
        (4.61, 9.08, 11.14, 13.95, 13.69, 15.47, 15.44, 63.69),
        (0.25, 0.79, 1.75, 3.85, 3.39, 3.44, 4.65, 5.01),
    ),
}

#: what each engine copies with: "cpu" (the CPUs: threads) or "dma" (an engine the CPU
#: hands the copy to and waits for, asleep)
KIND = {"baseline": "cpu", "mtcopy": "cpu", "dcbm": "dma"}


def rows() -> list[dict]:
    """The table as rows of ``engine, width, folio_bytes, gbps_mean, gbps_sd``."""
    return [
        {"engine": e, "width": w, "folio_bytes": s, "gbps_mean": m, "gbps_sd": sd}
        for (e, w), (means, sds) in TABLE.items()
        for s, m, sd in zip(SIZES, means, sds)
    ]


__all__ = ["KIND", "SIZES", "SOURCE", "TABLE", "rows"]
