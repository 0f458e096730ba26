"""Tables and progress for the command line, drawn with rich (one way for every command).

rich was chosen over hand-written formatters: it sizes columns to their contents (long
backend specs do not break the layout), degrades to plain text when the output is not a
terminal, and its progress bar gives an ETA from the measured speed. Progress goes to
stderr; when stderr is not a terminal, one plain line per finished item replaces the bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

#: Width of plain-text output (not a terminal) when COLUMNS does not say.
PLAIN_WIDTH = 100
#: A width set by ``offload --width N`` (None: COLUMNS, else the terminal's, else
#: :data:`PLAIN_WIDTH`).
WIDTH: int | None = None


def width(file: IO[str] | None = None) -> int | None:
    """The width output is drawn to: ``--width``, else COLUMNS, else the terminal's
    (None: rich asks it), else :data:`PLAIN_WIDTH`. Tables wrap their cells to fit it,
    never cut them."""
    if WIDTH is not None:
        return WIDTH
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) >= 20:
        return int(env)
    f = file if file is not None else sys.stdout
    try:
        tty = f.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty else PLAIN_WIDTH


def _console(file: IO[str]) -> Console:
    return Console(file=file, width=width(file), highlight=False, emoji=False)


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (click's test runner swaps it)."""
    return _console(sys.stdout)


def stderr() -> Console:
    """A console on the current ``sys.stderr``."""
    return _console(sys.stderr)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    caption: str | None = None,
    right: Sequence[int] | None = None,
) -> RenderableType:
    """A table with one header row, a title above and a caption (notes) below; *right*
    lists the columns aligned right (default: every column but the first)."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    align = set(range(1, len(columns))) if right is None else set(right)
    for i, c in enumerate(columns):
        # too wide for the output: cells wrap (at spaces, else anywhere), nothing is cut
        t.add_column(Text(c), justify="right" if i in align else "left", overflow="fold")
    for r in rows:  # Text: a '[cuda12x]' in a cell is text, not rich markup
        t.add_row(*(Text("" if v is None else str(v)) for v in r))
    # title and notes as lines of their own, not rich's title and caption: a long line
    # must not widen the columns
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    parts.append(t)
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def gib(nbytes: int) -> str:
    """Bytes as GiB with one decimal (``19555713024 -> "18.2 GiB"``)."""
    return f"{nbytes / 2**30:.1f} GiB"


def print_table(*args: Any, **kw: Any) -> None:
    """Print :func:`table` (same arguments) on stdout."""
    stdout().print(table(*args, **kw))


class RunProgress:
    """Progress over *total* runs, each with a weight (its expected cost), on stderr.

    On a terminal: a bar advancing by weight, the runs done, the elapsed time and an ETA
    from the measured speed. Otherwise: nothing per run, one line per finished item
    (:meth:`done`) with the runs done, the time spent and an estimate of the time left.
    Weights make the ETA honest when runs differ in cost (a run of 4 KiB folios costs
    several times one of 2 MiB folios); without them every run weighs 1.
    """

    def __init__(
        self, label: str, total: int, weight: float | None = None, unit: str = "runs"
    ) -> None:
        self.label = label
        self.unit = unit
        self.total = total
        self.weight = float(weight) if weight else float(total)
        self.count = 0
        self.done_weight = 0.0
        self.items = 0
        self.t0 = time.monotonic()
        self._err = stderr()
        self._bar: Progress | None = None
        self._task: Any = None
        if self._err.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[runs]} " + unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self._err,
                transient=True,
            )
            self._task = self._bar.add_task(label, total=self.weight, runs=f"0/{total}")

    def __enter__(self) -> RunProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, what: str = "", n: int = 1, weight: float | None = None) -> None:
        """*n* more runs done (together weighing *weight*, default *n*); *what* is being
        worked on."""
        self.count += n
        w = float(n if weight is None else weight)
        self.done_weight += w
        if self._bar is not None:
            desc = f"{self.label}: {what}" if what else self.label
            runs = f"{self.count}/{self.total}"
            self._bar.update(self._task, advance=w, description=desc, runs=runs)

    def eta(self) -> float:
        """Seconds left, from the time spent per unit of weight so far."""
        if self.done_weight <= 0:
            return 0.0
        spent = time.monotonic() - self.t0
        return spent / self.done_weight * max(0.0, self.weight - self.done_weight)

    def done(self, line: str) -> None:
        """An item finished: a line on stderr when it is not a terminal."""
        self.items += 1
        if self._bar is None:
            spent = time.monotonic() - self.t0
            eta = f", ~{self.eta():.0f} s left" if self.count < self.total else ""
            self._err.print(
                f"[{self.count}/{self.total} {self.unit}, {spent:.0f} s{eta}] {line}",
                markup=False,
                highlight=False,
            )
        else:
            self._bar.console.print(line, markup=False, highlight=False)


@contextmanager
def progress(
    label: str, total: int, weight: float | None = None, unit: str = "runs"
) -> Iterator[RunProgress]:
    """Progress over *total* items (*unit*: runs by default) weighing *weight* in all,
    on stderr (see :class:`RunProgress`)."""
    with RunProgress(label, total, weight, unit) as p:
        yield p


__all__ = [
    "PLAIN_WIDTH",
    "WIDTH",
    "gib",
    "print_table",
    "progress",
    "stderr",
    "stdout",
    "table",
    "width",
]
