"""The import graph of the product: no cycles, and sans-I/O cores that stay sans-I/O.

The graph is read from the source: every ``import`` in a module, at any depth,
those under ``if TYPE_CHECKING:`` too (a type-only import back is still two modules
that know each other), so a cycle is found even when import order or a lazy import
happens to hide it. The checker is tested on a tree with a cycle of its own, so it
can fail. The cores are checked by importing them in a fresh
interpreter and looking at what got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgenet", "admin_api")
#: Protocol cores: bytes (or datagrams) and ``now`` in, events out; no I/O of their own.
CORES = ("edgenet.wire.frames", "edgenet.wire.messages", "edgenet.server.session")
IO_MODULES = ("asyncio", "socket", "structlog")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules an import statement in ``tree`` loads by name: for ``from x import y``,
    ``x.y`` when that is a module in ``known``, else ``x``. (Loading ``x.y`` runs the
    package ``x`` first, as any submodule does; that is not counted.)"""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                sub = f"{prefix}.{alias.name}"
                found.add(sub if sub in known else prefix)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        names = imported_names(ast.parse(path.read_text(encoding="utf-8")), name,
                               path.name == "__init__.py", set(files))
        graph[name] = {n for n in names if n in files and n != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_product_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 50  # the whole tree was read
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from . import c\n")
    (pkg / "e.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg.f import x\n")
    (pkg / "f.py").write_text("from pkg import e\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.c"}
    assert graph["pkg.e"] == {"pkg.f"}  # a type-only import counts
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"], ["pkg.e", "pkg.f"]]


@pytest.mark.parametrize("core", CORES)
def test_protocol_cores_load_no_io(core: str) -> None:
    probe = (f"import sys, {core}; "
             f"print(','.join(m for m in {IO_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=60)
    assert out.stdout.strip() == "", f"{core} loads {out.stdout.strip()}"
