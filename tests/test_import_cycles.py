"""No import cycle in src/: every `import` and `from ... import` of every module, at module level,
inside functions and under `if TYPE_CHECKING:` alike (a cycle that only a late import keeps from
failing today fails the day someone hoists the import), read with `ast`, never by importing."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of `root` it imports. `from package import name` is an edge to the
    submodule `package.name` where there is one, else to the package."""
    modules = {module_name(path, root): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_src_has_no_import_cycle():
    assert cycles(import_graph(SRC)) == []


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_planted_cycle_is_found_through_late_and_type_checking_imports(tmp_path):
    root = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from .b import g\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from . import a\n",
    })

    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_package_importing_a_name_from_its_own_init_is_a_cycle(tmp_path):
    """`from . import __doc__` in a submodule that the package imports (sweep/cli.py did)."""
    root = write(tmp_path, {"pkg/__init__.py": "from .cli import main\n", "pkg/cli.py": "from . import __doc__\n"})

    assert cycles(import_graph(root)) == [["pkg", "pkg.cli"]]


def test_the_graph_reads_this_projects_relative_imports():
    graph = import_graph(SRC)
    # Pinned by hand from the source: report.dpo formats with report.cells; sweep.runs uses sweep.row.
    assert {"policyload.report.cells", "policyload.report.runs"} <= graph["policyload.report.dpo"]
    assert "policyload.sweep.row" in graph["policyload.sweep.runs"]
