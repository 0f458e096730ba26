"""Click parameter types shared by the ``offload`` commands."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses NaN and the infinities.

    NaN compares false with every bound, so a plain FloatRange lets ``nan`` through.
    """

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


__all__ = ["FiniteFloatRange"]
