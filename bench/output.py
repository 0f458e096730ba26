"""Where a suite's results go: stdout (table, ``--json`` or ``--csv``), a file (``-o``),
a plot (``--plot``), and the notes and warnings on stderr. Every output option is
checked before any work, and the plot comes last, after the results are safe."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from offload.console import stderr, stdout
from offload.hostinfo import instability

from . import report

#: Suffixes ``-o`` understands.
OUTPUT_KINDS = {".json": "json", ".csv": "csv"}
#: Figure formats ``--plot`` writes (a name without one gets ``.png``).
PLOT_KINDS = (".png", ".pdf", ".svg")


@dataclass
class Outputs:
    """The output options of one command, validated."""

    as_json: bool = False
    as_csv: bool = False
    output: str | None = None
    plot: str | None = None
    force: bool = False  #: overwrite an existing --plot file

    def check(self) -> None:
        """Refuse bad output options before any work (click usage errors, exit 2)."""
        if self.as_json and self.as_csv:
            raise click.UsageError(
                "--json and --csv both print on stdout: choose one, or write one of them "
                "to a file with -o FILE.json / -o FILE.csv"
            )
        if self.output is not None:
            _check_path(self.output, "-o")
            if os.path.splitext(self.output)[1].lower() not in OUTPUT_KINDS:
                raise click.BadParameter(
                    f"{self.output!r}: the file name must end in .json or .csv", param_hint="-o"
                )
        if self.plot is not None:
            _check_path(self.plot, "--plot")
            ext = os.path.splitext(self.plot)[1].lower()
            if not ext:  # the file written is the file named, and said
                self.plot += ".png"
            elif ext not in PLOT_KINDS:
                raise click.BadParameter(
                    f"{self.plot!r}: a figure is {', '.join(PLOT_KINDS)}", param_hint="--plot"
                )
            if os.path.exists(self.plot) and not self.force:
                raise click.BadParameter(
                    f"{self.plot!r} exists; add --force to overwrite it", param_hint="--plot"
                )
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise click.UsageError(
                    "--plot needs matplotlib: pip install 'folio-offload[plot]'"
                ) from None


def _check_path(path: str, hint: str) -> None:
    if "\x00" in path or not path.strip():
        raise click.BadParameter(f"{path!r} is not a file name", param_hint=hint)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint=hint)
    if not os.access(folder, os.W_OK):
        raise click.BadParameter(f"folder {folder!r} is not writable", param_hint=hint)
    if os.path.isdir(path):
        raise click.BadParameter(f"{path!r} is a folder", param_hint=hint)


@dataclass
class Result:
    """What a suite produced: the JSON document, and how to show it as text."""

    doc: dict
    render: Callable[[], list[Any]]  #: rich renderables (titles, tables) for the terminal
    notes: list[str] = field(default_factory=list)
    plot: Callable[[str], None] | None = None


def noisy_warning(results: list[dict]) -> str | None:
    """One warning when cells are noisy: how many, the likely causes here, the fix."""
    noisy = [r for r in results if r.get("noisy")]
    if not noisy:
        return None
    causes = instability()
    why = "; ".join(causes) if causes else "other processes or frequency changes during the run"
    return (
        f"{len(noisy)} of {len(results)} cells vary by more than 10% between runs (marked ~). "
        f"Likely causes on this machine: {why}. To fix: close other programs, use more runs "
        "(--repeat 10), and compare ratios within one run rather than GB/s across runs."
    )


def write_file(path: str, doc: dict) -> None:
    """Write *doc* (or its results, for a ``.csv`` path) to *path* at once: into a file
    beside it, then renamed over it, so that a reader or a kill never sees half a file."""
    kind = OUTPUT_KINDS[os.path.splitext(path)[1].lower()]
    text = report.to_json(doc) + "\n" if kind == "json" else report.to_csv(doc.get("results", []))
    tmp = f"{path}.partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def partial_writer(out: Outputs, head: dict) -> Callable[[list[dict]], None] | None:
    """With ``-o``, a function that writes the cells finished so far (a document of
    *head* and those results, marked ``"partial"``) each time one finishes, so that an
    interrupted or killed run keeps every finished cell; None without ``-o``."""
    if out.output is None:
        return None
    path = out.output

    def write(rows: list[dict]) -> None:
        write_file(path, {**head, "results": rows, "partial": f"{len(rows)} cells so far"})

    return write


def emit(out: Outputs, res: Result) -> None:
    """Write the results: the ``-o`` file, then stdout, then notes, then the plot.

    The file comes first, so that a closed stdout (``| head``) loses nothing measured.
    """
    results = res.doc.get("results", [])
    warning = noisy_warning(results)
    if warning:
        res.doc.setdefault("warnings", []).append(warning)
    if out.output is not None:
        kind = OUTPUT_KINDS[os.path.splitext(out.output)[1].lower()]
        write_file(out.output, res.doc)
        click.echo(f"{kind.upper()} written to {out.output}", err=True)
    if out.as_json:
        click.echo(report.to_json(res.doc))
    elif out.as_csv:
        click.echo(report.to_csv(results), nl=False)
    else:
        con = stdout()
        for item in res.render():
            con.print(item)
    err = stderr()
    for note in res.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if warning:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if out.plot is not None and res.plot is not None and results:
        res.plot(out.plot)
        click.echo(f"plot written to {out.plot}", err=True)


def output_options(f: Callable) -> Callable:
    """``--json``, ``--csv`` and ``-o`` for a command."""
    for opt in reversed(
        [
            click.option("--json", "as_json", is_flag=True, help="Print the JSON document."),
            click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one line per cell)."),
            click.option(
                "-o",
                "--output",
                "output",
                default=None,
                metavar="FILE",
                help="Also write the results to FILE.json (the JSON document) or FILE.csv.",
            ),
        ]
    ):
        f = opt(f)
    return f
