"""The import graph of the repository matches its architecture (DESIGN.md, "Packages").

- The contract imports only msgspec and the standard library.
- A deployable (gateway, processor, dashboard) imports the contract and its own modules only:
  never another deployable, the SDK, or the development tools (`clickstream`).
- The SDK imports the contract and its own modules only.
- Every third-party module a part imports is installed by the dependencies its own
  pyproject.toml declares, so each part installs and runs alone.
- No module imports itself through others (no import cycles).

Imports are read from the source with `ast`, all of them: module level, inside functions
(lazy imports) and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
CONTRACT = "clickstream_contract"
TOOLS = "clickstream"
SDK = "clickstream_sdk"
DEPLOYABLES = ("gateway", "processor", "dashboard")
FIRST_PARTY = frozenset({CONTRACT, TOOLS, SDK, *DEPLOYABLES})
# What each part may import of the first-party packages, besides itself.
ALLOWED = {
    CONTRACT: frozenset(),
    SDK: frozenset({CONTRACT}),
    **{deployable: frozenset({CONTRACT}) for deployable in DEPLOYABLES},
    TOOLS: FIRST_PARTY,
}
# Files that belong to a part without living in its folder: the function's archive entry.
EXTRA_FILES = {"processor": [REPO / "terraform" / "function" / "main.py"]}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in `source`, wherever it stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def part_files(part: str) -> list[Path]:
    return sorted((REPO / part).rglob("*.py")) + EXTRA_FILES.get(part, [])


def part_imports(part: str) -> dict[str, set[Path]]:
    """Imported top-level module -> the files of `part` that import it."""
    imports: dict[str, set[Path]] = {}
    for path in part_files(part):
        for module in imported_modules(path.read_text()):
            imports.setdefault(module, set()).add(path.relative_to(REPO))
    return imports


def forbidden_imports(part: str, imports: dict[str, set[Path]]) -> dict[str, set[Path]]:
    allowed = ALLOWED[part] | {part}
    return {
        module: files
        for module, files in imports.items()
        if module in FIRST_PARTY and module not in allowed
    }


def third_party(imports: dict[str, set[Path]]) -> set[str]:
    return {
        module
        for module in imports
        if module not in FIRST_PARTY and module not in sys.stdlib_module_names
    }


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_parts_import_only_what_the_architecture_allows(part: str) -> None:
    imports = part_imports(part)
    assert imports, f"no imports read from {part}/"
    assert forbidden_imports(part, imports) == {}


def test_the_contract_imports_only_msgspec_and_the_standard_library() -> None:
    assert third_party(part_imports(CONTRACT)) == {"msgspec"}


def test_the_rules_catch_a_deployable_importing_another_part() -> None:
    source = (
        "import msgspec\n"
        "from clickstream_contract import envelope\n"
        "def lazy():\n"
        "    from processor.db import connect\n"
        "if TYPE_CHECKING:\n"
        "    import clickstream.stack\n"
    )
    imports = {module: {Path("gateway/x.py")} for module in imported_modules(source)}
    assert set(forbidden_imports("gateway", imports)) == {"processor", "clickstream"}
    assert set(forbidden_imports(TOOLS, imports)) == set()


def declared_closure(pyproject: Path) -> set[str]:
    """The distributions a part's declared dependencies install, transitively (no extras
    beyond those named)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    pending = [Requirement(spec) for spec in project["dependencies"]]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        for spec in importlib.metadata.requires(name) or []:
            dependency = Requirement(spec)
            extras = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(e) for e in extras):
                pending.append(dependency)
    return found


@pytest.mark.parametrize("part", [CONTRACT, SDK, *DEPLOYABLES])
def test_each_part_declares_what_it_imports(part: str) -> None:
    providers = importlib.metadata.packages_distributions()
    installed = declared_closure(REPO / part / "pyproject.toml")
    missing = {
        module: sorted(map(str, files))
        for module, files in part_imports(part).items()
        if module in third_party({module: files})
        and not {canonicalize_name(d) for d in providers.get(module, [])} & installed
    }
    assert missing == {}, f"{part}/pyproject.toml does not install what these files import"


def test_the_clickstream_command_runs_the_commands_each_part_declares() -> None:
    """Each part registers its commands through its pyproject's entry points; the command line
    offers exactly what the installed parts declare."""
    from clickstream_contract.cli import COMMANDS_GROUP, build_parser

    declared = {
        name: target
        for pyproject in [REPO / "pyproject.toml", *REPO.glob("*/pyproject.toml")]
        for name, target in tomllib.loads(pyproject.read_text())["project"]
        .get("entry-points", {})
        .get(COMMANDS_GROUP, {})
        .items()
    }
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
    assert installed == declared
    parser = build_parser()
    (subcommands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subcommands.choices) == {
        *("gateway", "processor", "db", "dashboard"),  # the deployables'
        *("up", "emulator", "loadgen", "audit", "erase"),  # the development and operations tools'
    }


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (`from pkg import module`
    counts as importing the module)."""
    paths = {module_name(p): p for part in sorted(FIRST_PARTY) for p in part_files(part)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in paths} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = module_graph()
    assert {"gateway.app", "processor.worker", "clickstream.stack"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
