"""The structure the next change relies on: one stage registry, no import cycle, no stage module
importing another, small modules and short stage recipes (docs/architecture.md)."""

import ast
import inspect
from pathlib import Path

from lifecycle import stages as registry
from tests.conftest import ROOT

PACKAGE = ROOT / "lifecycle"
STAGE_MODULES = {f"lifecycle.{name}" for name in registry.NAMES}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the lifecycle modules it imports anywhere in its code (top level or inside a function)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(_imports()) is None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_stage_module_imports_another_or_the_pipeline():
    graph = _imports()
    for stage in STAGE_MODULES:
        assert not graph[stage] & (STAGE_MODULES | {"lifecycle.cli", "lifecycle.config", "lifecycle.core.pipeline"}), stage


def test_core_never_imports_a_stage_or_the_registry():
    for name, imported in _imports().items():
        if name.startswith("lifecycle.core"):  # what stages share knows no stage
            assert not imported & (STAGE_MODULES | {"lifecycle.stages", "lifecycle.config", "lifecycle.cli"}), name


def test_modules_are_small_and_stage_recipes_short():
    long = {p.name: n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) >= 300}
    assert not long
    for stage in registry.STAGES:
        assert len(inspect.getsource(stage.run).splitlines()) <= 60, stage.name


def test_the_registry_is_the_only_list_of_stages():
    """Only lifecycle/stages.py names every stage: elsewhere in the package no line lists them all."""
    for path in PACKAGE.rglob("*.py"):
        if path.name != "stages.py":
            for line in path.read_text().splitlines():
                assert sum(f'"{n}"' in line for n in registry.NAMES) < 3, f"{path.name}: {line.strip()}"


def test_a_stage_module_run_as_main_is_the_cli_command(tmp_path):
    """`python -m lifecycle.scope …` is `python -m lifecycle scope …`: same checks, same one-paragraph error."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lifecycle.scope", "--config", str(ROOT / "configs" / "tiny.yaml"),
                           f"run.root={tmp_path}", "scope.max_new_tokens=0"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "`scope.max_new_tokens`" in done.stderr and "Traceback" not in done.stderr
