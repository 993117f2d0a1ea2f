"""The package's shape: a handful of top-level modules, stage subpackages, and no import cycle
(imports inside functions included), read from the source with an AST walk."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "zoft"
# the entry points (the command lines, and zo: the library API for users' own loops) and basics
TOP_LEVEL = {"__init__", "__main__", "cli", "zo", "config", "errors", "registry"}
STAGES = {"run", "models", "scoring", "tasks", "optim", "sweep", "report", "benchmark"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """zoft module -> the zoft modules it imports anywhere in its source (the most specific
    module named: `from zoft.run import rundir` counts as zoft.run.rundir)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names
                ]
            edges |= {t for t in targets if t in paths and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_top_level_holds_only_the_entry_points_and_shared_basics():
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules == TOP_LEVEL
    assert len(modules) <= 7


def test_every_other_module_lives_in_a_stage_subpackage():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == STAGES


def test_no_import_cycle_deferred_imports_included():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_report_never_imports_torch_heavy_stages():
    """report/ reads run directories: it may use run.rundir / run.record and task metadata only."""
    graph = import_graph()
    allowed_prefixes = (
        "zoft.report",
        "zoft.run.rundir",
        "zoft.run.record",
        "zoft.tasks",
        "zoft.errors",
        "zoft.registry",
        "zoft.config",
    )
    for name, edges in graph.items():
        if name.startswith("zoft.report"):
            bad = {e for e in edges if not e.startswith(allowed_prefixes)}
            assert not bad, f"{name} imports {bad}"
