"""Small vectorised helpers over index ranges."""

from __future__ import annotations

import numpy as np


def expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for every pair, without a Python loop.

    Parameters
    ----------
    starts, lengths : numpy.ndarray
        Integer arrays of equal length; lengths must be non-negative.

    Returns
    -------
    numpy.ndarray
        int64 array of ``lengths.sum()`` indices.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    if lengths.size and (lengths == lengths[0]).all():
        n = int(lengths[0])
        return (starts[:, None] + np.arange(n, dtype=np.int64)).ravel()
    ends = np.cumsum(lengths)
    offs = np.repeat(ends - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total, dtype=np.int64) - offs)


def as_run(idx: np.ndarray) -> slice | None:
    """*idx* as a slice where its entries are consecutive and ascending, else None (so
    that reads and writes at them need no index array).

    Examples
    --------
    >>> as_run(np.array([4, 5, 6])), as_run(np.array([4, 6, 5]))
    (slice(4, 7, None), None)
    """
    n = idx.size
    if n < 2 or int(idx[-1]) - int(idx[0]) != n - 1:
        return None
    return slice(int(idx[0]), int(idx[0]) + n) if bool((idx[1:] > idx[:-1]).all()) else None


def run_boundaries(*contiguous: np.ndarray) -> np.ndarray:
    """Start indices of runs where every given boolean "continues" array holds.

    ``contiguous[k][i]`` tells whether element ``i + 1`` continues the run of element
    ``i``; a run breaks where any of them is False. Returns the start index of each run.
    """
    cont = contiguous[0]
    for c in contiguous[1:]:
        cont = cont & c
    breaks = np.flatnonzero(~cont)
    out = np.empty(breaks.size + 1, dtype=np.int64)
    out[0] = 0
    out[1:] = breaks + 1
    return out


def folio_pages(order: np.ndarray) -> np.ndarray:
    """Base pages of each folio (``2**order``) as int64."""
    return np.left_shift(np.int64(1), order, dtype=np.int64)


def total_pages(order: np.ndarray) -> int:
    """Base pages of all the folios of the given orders: ``folio_pages(order).sum()``,
    without the array of sizes where every folio has the same order."""
    order = np.asarray(order)
    if not order.size:
        return 0
    k = int(order.flat[0])
    if (order == k).all():  # one folio size (the usual batch): no array of sizes
        return int(order.size) << k
    return int(folio_pages(order).sum())


def aligned_rows(a: np.ndarray, span: int) -> np.ndarray:
    """A view of the 1-D array *a* as rows of *span* elements (a tail that fills no row
    is left out): row ``i`` holds elements ``i*span .. (i+1)*span - 1``, so that a block
    aligned to *span* (a folio, a buddy block) is one row."""
    return a[: a.size - a.size % span].reshape(-1, span)
