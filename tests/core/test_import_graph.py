"""The layers run one way (docs/architecture.md, "Layers"): targets/ builds on the contract of
orchestrator/ (orchestrator/target_contract.py), orchestrator/ finds targets by entry point
only, scoring/ stands alone, and no two modules of the three packages import each other.

The graph is read from the source with `ast`: every import, at module level or inside a
function (a lazy import is still a dependency), `from . import x` resolved to the module `x`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orchestrator.target_contract
import targets.base

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "targets", "scoring")
# The runner, the store and the commands: a target reaches them only through its StageContext.
INTERNAL = frozenset({"api", "cli", "runner", "leases", "migrate", "claims", "store", "tables", "worker",
                      "registry_feedback", "mlflow_plugin", "progress", "faults", "arguments"})


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for file in (root / package).rglob("*.py"):
            parts = file.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def _imported(module: str, file: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules of the three packages an import statement loads (a name imported from a
    package is the submodule of that name when there is one, else the package itself)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                 for alias in node.names]
    found = set()
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            found.add(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        graph[module] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= _imported(module, file, node, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for dependency in sorted(graph[module]):
            if dependency not in index:
                visit(dependency)
                low[module] = min(low[module], low[dependency])
            elif dependency in stack:
                low[module] = min(low[module], index[dependency])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _package(module: str) -> str:
    return module.split(".")[0]


def _edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((module, dependency) for module, dependencies in graph.items() for dependency in dependencies)


def test_orchestrator_never_imports_targets() -> None:
    wrong = [edge for edge in _edges(import_graph()) if _package(edge[0]) == "orchestrator"
             and _package(edge[1]) == "targets"]
    assert not wrong, f"orchestrator/ finds targets by entry point only (target_contract.load_target): {wrong}"


def test_scoring_imports_neither_orchestrator_nor_targets() -> None:
    wrong = [edge for edge in _edges(import_graph()) if _package(edge[0]) == "scoring" and _package(edge[1]) != "scoring"]
    assert not wrong, f"scoring/ is installed alone into model environments and images: {wrong}"


def test_targets_use_the_contract_not_the_runner_or_store() -> None:
    wrong = [edge for edge in _edges(import_graph()) if _package(edge[0]) == "targets"
             and _package(edge[1]) == "orchestrator" and edge[1].split(".")[-1] in INTERNAL]
    assert not wrong, f"targets see the runner and the store through StageContext only: {wrong}"


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_targets_base_is_the_contract_for_plugins_written_against_it() -> None:
    for name in targets.base.__all__:
        assert getattr(targets.base, name) is getattr(orchestrator.target_contract, name), name
    assert sorted(targets.base.__all__) == sorted(orchestrator.target_contract.__all__)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


@pytest.mark.parametrize(("files", "expected"), [
    # a lazy import inside a function is a dependency too
    ({"orchestrator/store.py": "def f():\n    from .leases import expiry\n",
      "orchestrator/leases.py": "from .store import Fence\n"},
     [["orchestrator.leases", "orchestrator.store"]]),
    # `from pkg import module` and `import pkg.module` both reach the module
    ({"scoring/_app.py": "from scoring import _v2\n", "scoring/_v2.py": "import scoring._app\n"},
     [["scoring._app", "scoring._v2"]]),
    # three modules around
    ({"orchestrator/a.py": "from . import b\n", "orchestrator/b.py": "from orchestrator.c import x\n",
      "orchestrator/c.py": "from .a import y\n"},
     [["orchestrator.a", "orchestrator.b", "orchestrator.c"]]),
    ({"orchestrator/a.py": "from . import b\n", "orchestrator/b.py": "import os\n"}, []),
])
def test_the_graph_finds_cycles(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    assert cycles(import_graph(_write(tmp_path, files))) == expected


def test_the_graph_sees_an_orchestrator_module_importing_a_target(tmp_path: Path) -> None:
    root = _write(tmp_path, {"orchestrator/api.py": "def f():\n    from targets.base import load_target\n",
                             "targets/base.py": "from orchestrator.config import ConfigKey\n",
                             "orchestrator/config.py": ""})
    assert ("orchestrator.api", "targets.base") in _edges(import_graph(root))
