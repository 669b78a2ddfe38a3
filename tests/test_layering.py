"""The package layers hold: no upward imports and no cycles, function-level imports included.

A function-level import hides a dependency from a reader of the module's header but not
from this test: every ``import`` statement anywhere in a module is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rexrag_env", "agents", "tuning")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> tuple[dict[str, set[str]], int]:
    """Project-internal edges (module -> modules it imports) and the number of
    function-level import statements among them."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    function_level = 0
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found = {t for t in targets if t in modules and t != name}
            edges[name] |= found
            function_level += bool(found) and node.col_offset > 0
    return edges, function_level


EDGES, FUNCTION_LEVEL = import_graph()


def violations(source_prefixes: tuple[str, ...], target_prefixes: tuple[str, ...]) -> list[str]:
    def under(module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    return sorted(
        f"{a} -> {b}"
        for a, targets in EDGES.items()
        for b in targets
        if under(a, source_prefixes) and under(b, target_prefixes)
    )


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        (("rexrag_env",), ("agents", "tuning")),  # the task knows nothing of agents
        (
            ("agents.llm",),
            ("agents.rexrag", "agents.warm_start", "agents.runs", "agents.analysis", "agents.cli"),
        ),
        (
            ("agents.rexrag",),
            ("agents.warm_start", "agents.runs", "agents.analysis", "agents.cli", "tuning"),
        ),
        (("agents.warm_start", "agents.runs", "agents.analysis"), ("agents.cli", "tuning")),
    ],
)
def test_no_lower_layer_imports_a_higher_one(lower, higher):
    assert violations(lower, higher) == []


def test_only_the_cli_imports_tuning():
    importers = {
        line.split(" -> ")[0] for line in violations(("agents", "rexrag_env"), ("tuning",))
    }
    assert importers <= {"agents.cli"}


def test_no_import_cycles():
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in EDGES[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in EDGES:
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles ({FUNCTION_LEVEL} function-level imports in all)"


def test_the_registered_warm_starts_are_the_recipes():
    """agents/__init__.py names the warm starts without importing their recipes."""
    from agents import WARM_START_ALIASES
    from agents.warm_start.recipes import WARM_STARTS

    assert set(WARM_START_ALIASES) == set(WARM_STARTS)
