"""folio-offload: Linux page migration with batched, offloadable folio copy, in user space.

The public API (docs/api.md)::

    from offload import Machine, Migrator, Provider, FolioBatch, OffloadError
    from offload import PAGE_SIZE, MPOL_MF_STRICT, MPOL_MF_MOVE, MPOL_MF_MOVE_ALL
"""

from __future__ import annotations

from . import registry
from .addrspace import Pin
from .batch import FolioBatch
from .constants import (
    MPOL_MF_MOVE,
    MPOL_MF_MOVE_ALL,
    MPOL_MF_STRICT,
    NR_MAX_BATCHED_MIGRATION,
    PAGE_SIZE,
)
from .errors import (
    BackendUnavailable,
    BadArgument,
    BadArgumentType,
    BadRange,
    MachineClosed,
    OffloadError,
    SpecError,
    UnknownBackend,
)
from .machine import Machine
from .migrator import Migrator, Option
from .process import MoveResult, Process
from .providers import Provider

__version__ = "0.1.0"

__all__ = [
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "MPOL_MF_STRICT",
    "NR_MAX_BATCHED_MIGRATION",
    "PAGE_SIZE",
    "BackendUnavailable",
    "BadArgument",
    "BadArgumentType",
    "BadRange",
    "FolioBatch",
    "Machine",
    "MachineClosed",
    "Migrator",
    "MoveResult",
    "OffloadError",
    "Option",
    "Pin",
    "Process",
    "Provider",
    "SpecError",
    "UnknownBackend",
    "registry",
]
