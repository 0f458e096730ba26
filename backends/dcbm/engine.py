"""The engine interface DCBM drives: open channels, submit, wait with a deadline, abort."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from .plan import Plan

PENDING, DONE, FAILED = 0, 1, -1


class Job:
    """One submitted plan: a status per descriptor (PENDING, DONE or FAILED)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.status = np.zeros(len(plan), dtype=np.int8)

    @property
    def ok(self) -> np.ndarray:
        """Descriptors that completed successfully."""
        return self.status == DONE


class DmaEngine(ABC):
    """A copy engine with independent channels (DMA queues).

    Completion is tracked per descriptor: engines may complete them in any order.
    """

    @abstractmethod
    def open(self, channels: int) -> None:
        """Acquire *channels* channels (called once, before any submit)."""

    @abstractmethod
    def submit(self, plan: Plan, memory: Mapping[int, object], channel_ids: list[int]) -> Job:
        """Issue every descriptor of *plan*; plan channel ``c`` runs on ``channel_ids[c]``."""

    @abstractmethod
    def wait(self, job: Job, timeout: float) -> bool:
        """Wait until every descriptor has finished or *timeout* seconds passed.

        Returns True when all finished (successfully or not) in time.
        """

    @abstractmethod
    def abort(self, job: Job) -> None:
        """Stop the job; on return no descriptor of it will write any more."""

    def close(self) -> None:
        """Release the channels."""

    def can_access(self, node) -> bool:
        """Whether the engine reaches *node*."""
        return getattr(node, "kind", "dram") == "dram"
