"""The examples the docs show run, and print what the docs say they print."""

from __future__ import annotations

import contextlib
import doctest
import io
import re
from pathlib import Path

import offload.machine

README = Path(__file__).parent.parent / "README.md"


def python_block(text: str, heading: str) -> str:
    at = text.index(heading)
    start = text.index("```python\n", at) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_example_prints_what_its_comments_say():
    code = python_block(README.read_text(), "## Python")
    expected = [
        m.group(1).strip()
        for m in re.finditer(r"^\s*print\(.*\)\s+#\s*(.+)$", code, flags=re.MULTILINE)
    ]
    assert len(expected) >= 3
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().splitlines() == expected


def test_the_machine_docstring_example_runs():
    result = doctest.testmod(offload.machine, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


def test_the_small_helpers_docstring_examples_run():
    import offload.arrays
    import offload.multisplit

    for mod in (offload.arrays, offload.multisplit):
        result = doctest.testmod(mod, verbose=False)
        assert result.attempted >= 1 and result.failed == 0, mod.__name__
