"""The exception hierarchy: one root, and helpers for kernel-style ``OSError``."""

from __future__ import annotations

import errno
import os


class OffloadError(Exception):
    """Root of every error that folio-offload raises on its own account."""

    #: the ``offload`` command's exit status when this error ends it
    exit_code = 1


class VerificationFailed(OffloadError):
    """A benchmark found bytes that did not arrive, or pages that did not move."""

    exit_code = 3


class SpecError(OffloadError, ValueError):
    """A malformed backend spec, policy or size string, or a bad option value."""


class BackendUnavailable(OffloadError, RuntimeError):
    """A backend exists but cannot run here (missing package or hardware)."""


class UnknownBackend(OffloadError, KeyError):
    """No backend of that name is registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def oserror(code: int, what: str = "") -> OSError:
    """Build the ``OSError`` subclass Python uses for *code*, with a message.

    Parameters
    ----------
    code : int
        A positive errno value, e.g. ``errno.EINVAL``.
    what : str
        Context appended to the strerror text.
    """
    msg = os.strerror(code)
    if what:
        msg = f"{msg}: {what}"
    return OSError(code, msg)


class MachineClosed(OffloadError, RuntimeError):
    """The machine was closed: it starts no new migrations."""


class BadArgument(OffloadError, ValueError):
    """An argument has the right type but a wrong value (range, alignment, name)."""


class BadArgumentType(OffloadError, TypeError):
    """An argument has the wrong type."""


class BadRange(OSError, BadArgument):
    """An address or length that the kernel refuses with EINVAL (``munmap`` past the end
    of the address space, a zero or negative length, an unaligned start).

    Both an ``OSError`` with ``errno == EINVAL``, as the system call answers, and a
    :class:`BadArgument` whose message names the argument; nothing was changed.
    """

    def __init__(self, what: str) -> None:
        super().__init__(errno.EINVAL, f"{os.strerror(errno.EINVAL)}: {what}")


def check_int(
    value: object, name: str, *, minimum: int | None = None, multiple: int | None = None
) -> int:
    """Return *value* as an int, or raise an error that names the argument *name*."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadArgumentType(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise BadArgument(f"{name}: must be >= {minimum}, got {value}")
    if multiple is not None and value % multiple:
        raise BadArgument(f"{name}: must be a multiple of {multiple}, got {value}")
    return value


def check_node(value: object, name: str, nr_nodes: int) -> int:
    """Return *value* as a node id below *nr_nodes*, or an error naming *name*."""
    nid = check_int(value, name, minimum=0)
    if nid >= nr_nodes:
        raise BadArgument(f"{name}: no node {nid} (nodes: 0..{nr_nodes - 1})")
    return nid
