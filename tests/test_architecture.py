"""The library's import graph: no cycle between assr_eic modules, and no import of bench/ or scripts/.

Read from the source with ``ast`` (nothing is imported), so it sees lazy imports inside functions too:
a cycle through a function-level import is still two modules that need each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "assr_eic"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The assr_eic modules (and any other top-level names) that the file at ``path`` imports."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            submodules = {f"{target}.{a.name}" for a in node.names} & modules  # "from . import obu"
            found.update(submodules or {target})
    return found


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """assr_eic module -> the assr_eic modules it names in an import (a package counts where it is named
    itself, e.g. ``from .codec import codec_class``, not where only its submodules are)."""
    files = _files()
    return {name: {t for t in _imports(path, set(files)) if t in files and t != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first = last), or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = 2
        path.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_find_cycle_finds_one():
    """The checker itself can fail: a two-module cycle and a self-contained chain."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_lazy_and_relative_imports():
    g = import_graph()
    assert "assr_eic.bitstream" in g["assr_eic.pipeline"]
    assert "assr_eic.codec.obu" in g["assr_eic.codec.av1"]  # "from . import obu"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_never_imports_bench_or_scripts():
    files = _files()
    bad = {
        name: sorted(t for t in _imports(path, set(files)) if t.split(".")[0] in ("bench", "scripts"))
        for name, path in files.items()
    }
    assert not {k: v for k, v in bad.items() if v}


def test_nothing_in_the_product_imports_the_data_fetching():
    """``assr_eic.train.fetch`` downloads (pip, apt-get): only set-up, training, benchmark and test code may
    use it, so no module of the library or the node pack names it, and the library never runs pip or apt."""
    files = _files()
    nodes = Path(__file__).resolve().parents[1] / "nodes"
    users = {name: _imports(path, set(files)) for name, path in files.items() if name != "assr_eic.train.fetch"}
    users |= {f"nodes.{p.stem}": _imports(p, set(files)) for p in sorted(nodes.glob("*.py"))}
    assert "assr_eic.train.fetch" in _imports(PACKAGE.parent / "bench" / "kodak.py", set(files))  # the check sees it
    assert sorted(n for n, targets in users.items() if "assr_eic.train.fetch" in targets) == []
    downloaders = [
        name
        for name, path in files.items()
        if name != "assr_eic.train.fetch" and any(w in path.read_text() for w in ('"pip", "download"', '"apt-get"'))
    ]
    assert downloaders == []
