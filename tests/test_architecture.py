"""The house's layout, checked: the dependency rule, no import circles, no import side effects.

``features`` imports nothing of ours; ``training`` and ``serving`` import ``features`` and never
each other; ``cli`` (the composition root) may import them all and nothing imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "training", "serving", "cli")
#: What each package may import of ours (besides itself).
ALLOWED = {"features": set(), "training": {"features"}, "serving": {"features"},
           "cli": {"features", "training", "serving"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports() -> dict[str, list[tuple[str, bool]]]:
    """Module -> (imported module of ours, only for type checking) for every module we ship."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    modules = {_module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            typing_only = _type_checking_lines(tree)
            found = []
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for name in names:
                    if name.split(".")[0] in PACKAGES and name in modules:
                        found.append((name, node.lineno in typing_only))
            graph[_module_name(path)] = found
    return graph


def test_the_graph_sees_our_imports():
    graph = imports()
    assert ("features.contract", False) in graph["features.sources"]
    assert ("training.tracking", True) in graph["training.promotion"]
    assert len(graph) > 50


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_rule_allows(package):
    broken = sorted({f"{module} imports {target}" for module, targets in imports().items()
                     if module.split(".")[0] == package for target, _ in targets
                     if target.split(".")[0] not in ALLOWED[package] | {package}})
    assert not broken, broken


def test_no_import_circles():
    """Runtime imports between our modules form no cycle (annotation-only imports excluded)."""
    graph = {m: {t for t, typing_only in targets if not typing_only and t != m}
             for m, targets in imports().items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_importing_every_module_writes_nothing_and_sets_no_mlflow_uri(tmp_path):
    """Configuration happens when a function is called, never at import."""
    modules = sorted(imports())
    code = ("import importlib, mlflow, os\n"
            f"for name in {modules!r}:\n"
            "    if name.endswith('pyfunc_model'): continue  # registers itself with MLflow\n"
            "    importlib.import_module(name)\n"
            "assert not mlflow.tracking._tracking_service.utils.is_tracking_uri_set()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                            "HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
