"""The architecture as a rule the suite checks.

- ``collector.core`` is sans-IO: it imports nothing that reads a clock, does I/O or
  logs, and nothing of the service shell, the CLI or the test tooling.
- The service never imports the test tooling.
- No module of the project takes part in an import cycle (imports inside functions
  count: a lazy import hides a cycle, it does not remove it).

The graph is read from the source with :mod:`ast`, so a violation fails here whether or
not the offending line runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "devicesim", "hil", "scenarios")

#: what a sans-IO module must not import (top-level names)
FORBIDDEN_IN_CORE = {"aiohttp", "sqlite3", "asyncio", "time", "logging", "serial", "socket",
                     "subprocess", "threading", "select", "selectors", "urllib", "http", "os",
                     "prometheus_client", "click", "simpy", "matplotlib", "random"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``name`` imports, resolved (relative imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.add(mod)
                # ``from pkg import submodule`` imports the submodule
                for a in child.names:
                    if f"{mod}.{a.name}" in MODULES:
                        found.add(f"{mod}.{a.name}")
            visit(child)

    visit(tree)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _project_edges(name: str) -> set[str]:
    """Imports of ``name`` that are project modules (a package import counts as its
    ``__init__``, and importing ``a.b.c`` imports ``a`` and ``a.b`` first)."""
    out = set()
    for mod in GRAPH[name]:
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in MODULES and prefix != name and not name.startswith(prefix + "."):
                out.add(prefix)
    return out


CORE = sorted(m for m in MODULES if m.startswith("collector.core"))


def test_the_core_exists_and_is_found():
    assert {"collector.core.wire", "collector.core.reassembly", "collector.core.xmldoc"} <= set(CORE)


@pytest.mark.parametrize("module", CORE)
def test_core_is_sans_io(module):
    bad = sorted(m for m in GRAPH[module] if m.split(".")[0] in FORBIDDEN_IN_CORE)
    assert not bad, f"{module} imports {bad}: the core must not do I/O, read a clock or log"
    shell = sorted(m for m in GRAPH[module]
                   if m.split(".")[0] in PACKAGES and not m.startswith("collector.core"))
    assert not shell, f"{module} imports {shell}: the core depends on nothing outside it"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("collector.service")))
def test_service_does_not_import_test_tooling(module):
    bad = sorted(m for m in GRAPH[module] if m.startswith("collector.testing"))
    assert not bad, f"{module} imports {bad}: the stand-ins stay out of the production path"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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
        for w in _project_edges(v):
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

    for v in sorted(MODULES):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    assert _cycles() == []


def test_the_cycle_check_sees_a_cycle(monkeypatch):
    """The check itself can fail: a fabricated back edge is reported."""
    monkeypatch.setitem(GRAPH, "collector.core.uplink",
                        GRAPH["collector.core.uplink"] | {"collector.core.reassembly"})
    assert ["collector.core.reassembly", "collector.core.uplink"] in _cycles()
