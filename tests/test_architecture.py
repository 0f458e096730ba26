"""The module graph: no cycles, the core flows one way, bench on the public API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("importgraph", ROOT / "tools" / "importgraph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["importgraph"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_import_graph_keeps_its_rules():
    tool = _tool()
    g = tool.graph()
    assert "offload.engine" in g and "offload.bench.cli" in g
    assert "offload.backends.dcbm.driver" in g
    assert tool.violations(g) == []


def test_the_checker_catches_what_it_targets():
    tool = _tool()
    g = {k: set(v) for k, v in tool.graph().items()}
    g["offload.scheduler"].add("offload.engine")  # a cycle, and upward in the chain
    g["offload.node"].add("offload.bench.cli")  # the core importing bench
    g["offload.bench.stress"].add("offload.engine")  # bench past the public API
    bad = "\n".join(tool.violations(g))
    assert "cycle:" in bad and "offload.engine" in bad
    assert "offload.scheduler imports offload.engine, which is above it" in bad
    assert "offload.node imports offload.bench.cli" in bad
    assert "offload.bench.stress imports offload.engine, not a public module" in bad


def test_type_checking_imports_count(tmp_path):
    """A type-only import is a dependency too: a circle through one is a circle."""
    tool = _tool()
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import offload.machine\n"
        "def f():\n    import offload.engine\n"
    )
    tool.ROOT = tmp_path
    both = {"offload.machine", "offload.engine"}
    assert tool.imports(src, both) == both
    assert tool.imports(src, both, typing=False) == {"offload.engine"}
