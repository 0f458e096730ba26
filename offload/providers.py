"""Offload providers: the engines registered beside the CPU path, each for some migrate
reasons and a range of folio sizes.

The series keeps one global migrator; here a machine may have several
(``Machine(offload=[...])``), and each batch is split only among the providers allowed
for its reason and its folios' sizes. On the command line a provider is
``SPEC[@reasons=NAMES][@sizes=MIN-MAX]``, and several are joined by ``+``::

    dma-threads:channels=2+emu:gbps=4@reasons=demotion,promotion@sizes=64K-2M
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import numpy as np

from .errors import SpecError, oserror
from .migrator import Migrator
from .reasons import ALL_REASONS, format_reasons, parse_reasons, reason_bit
from .sizes import format_size, parse_size

#: Joins the providers of one command-line value.
SEPARATOR = "+"


@dataclass(frozen=True)
class Provider:
    """An offload engine for ``Machine(offload=[...])``, with what it may be given.

    Parameters
    ----------
    backend : str or Migrator
        A backend spec (``"dma-threads:channels=2"``) or a migrator.
    reasons : str, int, tuple of str
        Migrate reasons it copies for (the kernel's MR_* names in lower case, without
        ``MR_``; ``promotion`` is ``numa_misplaced``), a mask, or ``"all"``.
    sizes : tuple, optional
        ``(min, max)`` folio sizes it copies, bytes or strings such as ``"64K"``; either
        end may be None (no limit).

    Raises
    ------
    SpecError
        For an unknown reason, a malformed range or a backend of another type.

    Examples
    --------
    >>> Provider("emu:gbps=4", reasons=("demotion", "promotion"), sizes=("64K", None)).sizes
    (65536, None)
    """

    backend: str | Migrator
    reasons: str | int | tuple[str, ...] = "all"
    sizes: tuple[int | str | None, int | str | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backend, (str, Migrator)):
            raise SpecError(
                f"offload: expected a backend spec or a Migrator, got {type(self.backend).__name__}"
            )
        try:
            mask = parse_reasons(self.reasons)
        except OSError as exc:  # the kernel's register says EINVAL; a spec, SpecError
            raise SpecError(exc.strerror or str(exc)) from None
        object.__setattr__(self, "reasons", mask)
        object.__setattr__(self, "sizes", parse_sizes_range(self.sizes))

    @property
    def mask(self) -> int:
        """The reason mask."""
        assert isinstance(self.reasons, int)
        return self.reasons


def parse_sizes_range(value: object) -> tuple[int, int | None]:
    """``(min, max)`` folio sizes in bytes from a tuple or ``"MIN-MAX"`` (either end may
    be empty or None: no limit).

    Raises
    ------
    SpecError
        For a malformed range, or a minimum above the maximum.
    """
    if value is None:
        return (0, None)
    if isinstance(value, str):
        lo_s, sep, hi_s = value.partition("-")
        if not sep:
            raise SpecError(f"sizes: expected MIN-MAX such as 64K-2M, got {value!r}")
        value = (lo_s.strip() or None, hi_s.strip() or None)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise SpecError(f"sizes: expected (min, max), got {value!r}")
    ends: list[int | None] = []
    for end, what in zip(value, ("minimum", "maximum")):
        if end is None:
            ends.append(None)
        elif isinstance(end, str):
            ends.append(parse_size(end, f"sizes {what}"))
        elif isinstance(end, int) and not isinstance(end, bool) and end >= 0:
            ends.append(end)
        else:
            raise SpecError(f"sizes: {what} must be a size in bytes or a string, got {end!r}")
    lo, hi = ends[0] or 0, ends[1]
    if hi is not None and hi < lo:
        raise SpecError(f"sizes: minimum {lo} is above maximum {hi}")
    return (lo, hi)


def parse_provider(text: str) -> Provider:
    """One ``SPEC[@reasons=NAMES][@sizes=MIN-MAX]`` of the command line.

    Raises
    ------
    SpecError
        For an unknown ``@`` key or a malformed value (the spec itself is checked when
        the backend is built).
    """
    spec, *extras = text.split("@")
    if not spec.strip():
        raise SpecError(f"offload: missing backend spec in {text!r}")
    kwargs: dict[str, object] = {}
    for extra in extras:
        key, eq, value = extra.partition("=")
        key = key.strip()
        if not eq or key not in ("reasons", "sizes") or key in kwargs:
            raise SpecError(
                f"offload {text!r}: expected @reasons=NAMES or @sizes=MIN-MAX once each, "
                f"got {'@' + extra!r}"
            )
        kwargs[key] = value.strip()
    try:
        return Provider(spec.strip(), **kwargs)  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError(f"offload {text!r}: {exc}") from None


def parse_providers(text: str) -> list[Provider]:
    """Several providers joined by ``+`` (see :func:`parse_provider`)."""
    parts = [p for p in text.split(SEPARATOR)]
    if any(not p.strip() for p in parts):
        raise SpecError(f"offload: empty provider in {text!r} (providers are joined by '+')")
    return [parse_provider(p) for p in parts]


@dataclass(frozen=True)
class Registration:
    """A registered provider: its migrator, reason mask and folio-size range."""

    migrator: Migrator
    mask: int = ALL_REASONS
    min_bytes: int = 0
    max_bytes: int | None = None

    def allows(self, reason: str) -> bool:
        """Whether batches for *reason* may go to it."""
        return bool(self.mask & reason_bit(reason))

    @property
    def limited(self) -> bool:
        """Whether it takes only some folio sizes."""
        return self.min_bytes > 0 or self.max_bytes is not None

    def fits(self, folio_bytes: np.ndarray) -> np.ndarray:
        """Per folio: whether its size is in the provider's range."""
        ok = folio_bytes >= self.min_bytes
        if self.max_bytes is not None:
            ok &= folio_bytes <= self.max_bytes
        return ok

    def describe(self) -> dict:
        """Reasons and sizes, for reports."""
        hi = "" if self.max_bytes is None else format_size(self.max_bytes)
        lo = format_size(self.min_bytes) if self.min_bytes else ""
        return {
            "reasons": format_reasons(self.mask),
            "sizes": f"{lo}-{hi}" if self.limited else "all",
        }


def registration(migrator: object, reasons: object, sizes: object) -> Registration:
    """Check and build a :class:`Registration` (the OSError the kernel's register gives)."""
    # the class is asked, never the instance (its look-ups are plugin code)
    if not isinstance(migrator, Migrator) or not callable(
        getattr(type(migrator), "offload_copy", None)
    ):
        raise oserror(errno.EINVAL, f"migrator: expected a Migrator, got {type(migrator).__name__}")
    mask = parse_reasons(reasons)  # type: ignore[arg-type]
    try:
        lo, hi = parse_sizes_range(sizes)
    except SpecError as exc:
        raise oserror(errno.EINVAL, str(exc)) from None
    return Registration(migrator, mask, lo, hi)


__all__ = [
    "Provider",
    "Registration",
    "parse_provider",
    "parse_providers",
    "parse_sizes_range",
    "registration",
]
