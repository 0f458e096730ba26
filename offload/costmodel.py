"""Cost models of a copy provider: what a call costs, fitted from what calls cost.

A call that copies ``folios`` folios of ``nbytes`` bytes in all costs

    t = fixed + per_folio * folios + nbytes / bandwidth

(:class:`CallCost`): a setup per call (a DMA driver's channel hand-off, a thread pool's
wake-up), a cost per descriptor or folio, and the bytes at the provider's bandwidth.
:func:`fit_calls` estimates the three from measured calls, robustly (Huber weights,
iterated), with a standard error for each. A provider of ``width`` channels or threads
that runs its copy part in parallel follows Amdahl's law over the width
(:class:`WidthCost`): fitted from two widths, it predicts the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import BadArgument


@dataclass(frozen=True)
class CallCost:
    """``fixed_s + per_folio_s * folios + nbytes / (gbps * 1e9)`` seconds per call.

    Attributes
    ----------
    fixed_s, per_folio_s : float
        Seconds per call, and per folio (descriptor).
    gbps : float
        Bandwidth, 1e9 bytes per second (``inf``: the bytes cost nothing).
    stderr : tuple of float
        Standard errors of (fixed_s, per_folio_s, seconds per byte), from the fit (0 for a
        cost given, not fitted).
    calls : int
        How many calls it was fitted from.
    """

    fixed_s: float
    per_folio_s: float
    gbps: float
    stderr: tuple[float, float, float] = (0.0, 0.0, 0.0)
    calls: int = 0

    def time(self, folios: float | np.ndarray, nbytes: float | np.ndarray) -> np.ndarray:
        """Predicted seconds of a call (arrays broadcast)."""
        per_byte = 0.0 if not math.isfinite(self.gbps) else 1.0 / (self.gbps * 1e9)
        if isinstance(folios, (int, float)) and isinstance(nbytes, (int, float)):
            # a scheduler asks this for every batch: plain floats, no arrays
            return self.fixed_s + self.per_folio_s * folios + per_byte * nbytes  # type: ignore[return-value]
        return (
            self.fixed_s
            + self.per_folio_s * np.asarray(folios, dtype=float)
            + per_byte * np.asarray(nbytes, dtype=float)
        )

    def scaled(self, factor: float) -> CallCost:
        """The same cost, every part *factor* times as long."""
        return CallCost(
            self.fixed_s * factor,
            self.per_folio_s * factor,
            self.gbps / factor,
            (self.stderr[0] * factor, self.stderr[1] * factor, self.stderr[2] * factor),
            self.calls,
        )

    def relative_error(self, folios: float, nbytes: float) -> float:
        """The predicted time's standard error over the predicted time (the uncertainty a
        scheduler probes to reduce)."""
        t = float(self.time(folios, nbytes))
        se = np.sqrt(
            self.stderr[0] ** 2 + (self.stderr[1] * folios) ** 2 + (self.stderr[2] * nbytes) ** 2
        )
        return float(se / t) if t > 0 else float("inf")

    def as_dict(self) -> dict:
        """Its parameters, for JSON (microseconds and GB/s)."""
        return {
            "fixed_us": self.fixed_s * 1e6,
            "per_folio_us": self.per_folio_s * 1e6,
            "gbps": self.gbps if np.isfinite(self.gbps) else None,
            "stderr_fixed_us": self.stderr[0] * 1e6,
            "stderr_per_folio_us": self.stderr[1] * 1e6,
            "stderr_s_per_gb": self.stderr[2] * 1e9,
            "calls": self.calls,
        }


def _lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares solution of ``a @ sol = y``; one column in closed form (what
    ``np.linalg.lstsq`` gives, at a tenth of its cost)."""
    if a.shape[1] == 1:
        col = a[:, 0]
        norm = float(col @ col)
        return np.array([float(col @ y) / norm if norm > 0 else 0.0])
    return np.linalg.lstsq(a, y, rcond=None)[0]


def _median(x: np.ndarray) -> float:
    """The median of a short array (np.median costs ten times more on a few dozen)."""
    s = np.sort(x)
    n = s.size
    return float(s[(n - 1) // 2] + s[n // 2]) / 2.0


def fit_calls(
    folios: np.ndarray, nbytes: np.ndarray, seconds: np.ndarray, huber: float = 1.345
) -> CallCost:
    """Fit :class:`CallCost` to measured calls, robustly.

    Least squares on relative errors (a slow call weighs as much as a fast one), with
    Huber weights iterated so that a call disturbed by something else (a page fault
    storm, another tenant) pulls the fit little. Parameters are kept non-negative (a
    negative one is fixed at 0 and the rest refitted). Fewer than three distinct calls
    leave the parameters they cannot tell apart at 0.

    Raises
    ------
    BadArgument
        Arrays of different lengths, no calls, or a time that is not positive.
    """
    f = np.asarray(folios, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if not (f.shape == b.shape == t.shape) or f.ndim != 1 or f.size == 0:
        raise BadArgument("fit_calls: folios, nbytes and seconds need one value per call")
    if not np.isfinite(t).all() or (t <= 0).any():
        raise BadArgument("fit_calls: every time must be positive and finite")
    x = np.column_stack([np.ones_like(f), f, b])
    # the columns the calls can tell apart: the bytes, then the fixed cost, then folios
    # (calls of one size cannot tell a fixed cost from a per-byte one: the time is put
    # on the bytes, so that a share of the size is predicted in proportion; one folio
    # size throughout makes folios and bytes one column: the bytes keep it)
    active = [2] if b.any() else [0]
    # calls all of one shape (a scheduler's batches of one size, each side alone) tell
    # apart only one column: no rank to compute
    same = bool((f == f[0]).all() and (b == b[0]).all())
    for j in () if same else (0, 1):
        if j in active:
            continue
        if np.linalg.matrix_rank(x[:, [*active, j]] / np.abs(x[:, [*active, j]]).max(0)) > len(
            active
        ):
            active.append(j)
    coef = np.zeros(3)
    w = 1.0 / t  # relative errors
    prev = None
    for _ in range(8):  # Huber weights settle in a few rounds
        coef = np.zeros(3)
        cols = list(active)
        while True:
            a = x[:, cols] * w[:, None]
            sol = _lstsq(a, t * w)
            if (sol >= 0).all() or len(cols) == 1:
                coef[cols] = np.maximum(sol, 0.0)
                break
            cols = [c for c, v in zip(cols, sol) if v >= 0] or [cols[0]]
        # settled to 1e-4 of each parameter: far inside the calls' own scatter
        if prev is not None and (np.abs(coef - prev) <= 1e-4 * np.abs(coef)).all():
            break
        prev = coef
        r = (t - x @ coef) / t
        scale = 1.4826 * _median(np.abs(r - _median(r))) or 1e-12
        u = np.abs(r) / (huber * scale)
        hw = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        new_w = hw / t
        if (np.abs(new_w - w) <= 1e-6 * np.abs(w)).all():
            break
        w = new_w
    stderr = [0.0, 0.0, 0.0]
    cols = [j for j in range(3) if coef[j] > 0]
    if cols and t.size > len(cols):
        a = x[:, cols] * w[:, None]
        resid = (t - x @ coef) * w
        sigma2 = float(resid @ resid) / (t.size - len(cols))
        try:
            cov = np.linalg.inv(a.T @ a) * sigma2
            for k, j in enumerate(cols):
                stderr[j] = float(np.sqrt(max(cov[k, k], 0.0)))
        except np.linalg.LinAlgError:
            pass
    gbps = float(1.0 / (coef[2] * 1e9)) if coef[2] > 0 else float("inf")
    return CallCost(float(coef[0]), float(coef[1]), gbps, (stderr[0], stderr[1], stderr[2]), t.size)


@dataclass(frozen=True)
class WidthCost:
    """Seconds per GB of a provider of width ``w`` (threads or channels): a serial part
    (the work no width shares: the engine's non-copy work, issuing, waiting) and a
    parallel part spread over the width, ``serial + parallel / w`` (Amdahl)."""

    serial: float
    parallel: float

    @classmethod
    def from_two(cls, w1: int, t1: float, w2: int, t2: float) -> WidthCost:
        """The model through two measured widths (seconds per GB at each). A provider that
        got slower with width has no parallel part: its time is their mean."""
        if w1 == w2 or min(w1, w2) < 1:
            raise BadArgument(f"two different widths >= 1 are needed, got {w1} and {w2}")
        if min(t1, t2) <= 0:
            raise BadArgument("times must be positive")
        parallel = (t1 - t2) / (1 / w1 - 1 / w2)
        if parallel <= 0:
            return cls((t1 + t2) / 2, 0.0)
        serial = t1 - parallel / w1
        if serial < 0:  # faster than linear: all of it parallel, through the wider point
            return cls(0.0, t2 * w2)
        return cls(serial, parallel)

    def seconds_per_gb(self, width: int) -> float:
        """Predicted seconds per GB at *width*."""
        return self.serial + self.parallel / width

    def gbps(self, width: int) -> float:
        return 1.0 / self.seconds_per_gb(width)


__all__ = ["CallCost", "WidthCost", "fit_calls"]
