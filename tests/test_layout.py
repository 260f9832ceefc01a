"""The import graph of the repository matches its architecture (the README's folder table).

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
from imports_testing import FIRST_PARTY, distribution_of, imported_names, installed_by

REPO = Path(__file__).resolve().parent.parent
CONTRACT = "clickstream_contract"
TOOLS = "clickstream"
SDK = "clickstream_sdk"
DEPLOYABLES = ("gateway", "processor", "dashboard")
# What each part may import of the first-party packages, besides itself.
ALLOWED = {
    CONTRACT: frozenset(),
    SDK: frozenset({CONTRACT}),
    **{deployable: frozenset({CONTRACT}) for deployable in DEPLOYABLES},
    TOOLS: FIRST_PARTY,
}
# Files that belong to a part without living in its folder: the function's archive entry.
EXTRA_FILES = {"processor": [REPO / "terraform" / "function" / "main.py"]}


def top_level(names: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in names}


def part_files(part: str) -> list[Path]:
    return sorted((REPO / part).rglob("*.py")) + EXTRA_FILES.get(part, [])


def part_imports(part: str) -> dict[str, set[Path]]:
    """Imported module (dotted) -> the files of `part` that import it."""
    imports: dict[str, set[Path]] = {}
    for path in part_files(part):
        for name in imported_names(ast.parse(path.read_text())):
            imports.setdefault(name, set()).add(path.relative_to(REPO))
    return imports


def forbidden_imports(part: str, imports: dict[str, set[Path]]) -> set[str]:
    """The first-party packages that `imports` reach and `part` may not import."""
    return top_level(set(imports)) & FIRST_PARTY - ALLOWED[part] - {part}


def third_party(imports: dict[str, set[Path]]) -> dict[str, set[Path]]:
    return {
        name: files
        for name, files in imports.items()
        if (top := name.partition(".")[0]) not in FIRST_PARTY
        and top not in sys.stdlib_module_names
        and top != "__future__"
    }


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_parts_import_only_what_the_architecture_allows(part: str) -> None:
    imports = part_imports(part)
    assert imports, f"no imports read from {part}/"
    assert forbidden_imports(part, imports) == set()


def test_the_contract_imports_only_msgspec_and_the_standard_library() -> None:
    assert top_level(set(third_party(part_imports(CONTRACT)))) == {"msgspec"}


def test_the_rules_catch_a_deployable_importing_another_part() -> None:
    source = (
        "import msgspec\n"
        "from clickstream_contract import envelope\n"
        "def lazy():\n"
        "    from processor.db import connect\n"
        "if TYPE_CHECKING:\n"
        "    import clickstream.stack\n"
    )
    imports = {name: {Path("gateway/x.py")} for name in imported_names(ast.parse(source))}
    assert forbidden_imports("gateway", imports) == {"processor", "clickstream"}
    assert forbidden_imports(TOOLS, imports) == set()


@pytest.mark.parametrize("part", [CONTRACT, SDK, *DEPLOYABLES])
def test_each_part_declares_what_it_imports(part: str) -> None:
    project = tomllib.loads((REPO / part / "pyproject.toml").read_text())["project"]
    installed = installed_by(project["dependencies"])
    names = set(third_party(part_imports(part)))
    # `from google.cloud import bigquery`: the namespace `google.cloud` is nobody's; its member is.
    leaves = {name for name in names if not any(n.startswith(f"{name}.") for n in names)}
    providers = {name: distribution_of(name) for name in leaves}
    assert None not in providers.values(), providers  # every import resolved to a distribution
    missing = {name for name, provider in providers.items() if provider not in installed}
    assert missing == set(), f"{part}/pyproject.toml does not install what it imports"


def test_a_google_namespace_import_needs_its_own_distribution() -> None:
    """`google` is shared by many distributions: the dashboard's google-auth must not pass for
    BigQuery."""
    dashboard = installed_by(["google-auth"])
    assert distribution_of("google.auth.jwt") in dashboard
    assert distribution_of("google.cloud.bigquery") not in dashboard


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
        # the development and operations tools'
        *("up", "function", "emulator", "loadgen", "audit", "erase", "env", "replay", "rates"),
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
