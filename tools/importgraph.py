"""Print the import graph of offload/, backends/ and bench/, and check its rules.

Usage::

    python3 tools/importgraph.py            # the graph, one module per line, then checks
    python3 tools/importgraph.py --dot      # Graphviz

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only: no data flows through them). The rules:

- no cycles;
- the migration core flows one way: process -> syscalls -> engine -> scheduler, and
  none of them imports machine (the machine composes them);
- the core (offload/) imports neither backends/ nor bench/ (installed as
  ``offload.backends`` and ``offload.bench``; both are found through entry points);
- bench/ imports only the public modules of the core (``PUBLIC``).

Modules are named as installed: ``backends/dcbm/driver.py`` is
``offload.backends.dcbm.driver``.

Exit status 1 when a rule is broken.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("offload", "backends", "bench")
#: modules of offload/ that bench/ and third parties may import
PUBLIC = {
    "offload",
    "offload.constants",
    "offload.costmodel",
    "offload.counters",
    "offload.errors",
    "offload.console",
    "offload.params",
    "offload.providers",
    "offload.hostinfo",
    "offload.native",
    "offload.registry",
    "offload.scheduler",
    "offload.sizes",
    "offload.testing",
}
#: the migration core, top to bottom: a module may import only those below it
CHAIN = (
    "offload.process",
    "offload.addrspace",
    "offload.syscalls",
    "offload.engine",
    "offload.scheduler",
)


#: where each package's folder installs (pyproject.toml [tool.setuptools.package-dir])
INSTALLED_AS = {"offload": "offload", "backends": "offload.backends", "bench": "offload.bench"}


def module_name(path: Path) -> str:
    """The import name of the file *path* once installed."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    parts[0] = INSTALLED_AS.get(parts[0], parts[0])
    return ".".join(parts)


def _core(mod: str) -> bool:
    return mod.startswith("offload") and not mod.startswith(("offload.backends", "offload.bench"))


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(path: Path, modules: set[str], typing: bool = True) -> set[str]:
    """The project modules that *path* imports, those under ``if TYPE_CHECKING:`` too
    (a type-only import is still a dependency: a circle through one is a circle);
    *typing* False leaves them out."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(mod: str) -> str | None:
        while mod and mod not in modules:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child) and not typing:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    hit = resolve(a.name)
                    if hit:
                        found.add(hit)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for a in child.names:  # ``from . import x`` names a module
                    hit = resolve(f"{mod}.{a.name}") if f"{mod}.{a.name}" in modules else None
                    hit = hit or resolve(mod)
                    if hit:
                        found.add(hit)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(p, modules) for p in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def violations(g: dict[str, set[str]]) -> list[str]:
    """Every broken rule, one line each."""
    bad = [f"cycle: {' <-> '.join(c)}" for c in cycles(g)]
    for i, mod in enumerate(CHAIN):
        for up in CHAIN[:i]:
            if up in g.get(mod, ()):
                bad.append(f"{mod} imports {up}, which is above it")
        if "offload.machine" in g.get(mod, ()):
            bad.append(f"{mod} imports offload.machine (the machine composes the core)")
    for mod, deps in g.items():
        if _core(mod):
            bad += [f"{mod} imports {d}" for d in sorted(deps) if not _core(d)]
        if mod.startswith("offload.bench"):
            bad += [
                f"{mod} imports {d}, not a public module of offload"
                for d in sorted(deps)
                if _core(d) and d not in PUBLIC
            ]
    return bad


def main(argv: list[str]) -> int:
    g = graph()
    if "--dot" in argv:
        print("digraph imports {")
        for mod in sorted(g):
            for dep in sorted(g[mod]):
                print(f'  "{mod}" -> "{dep}";')
        print("}")
    else:
        for mod in sorted(g):
            print(f"{mod} -> {', '.join(sorted(g[mod])) or '-'}")
    bad = violations(g)
    print("\n".join(bad) if bad else "no cycles; every layering rule holds", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
