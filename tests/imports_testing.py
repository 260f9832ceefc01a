"""What the repository's sources import, and which installed distributions provide it: shared by
the import-graph test (tests/test_layout.py) and the function archive's tests
(tests/test_terraform.py)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

FIRST_PARTY = frozenset(
    {"clickstream", "clickstream_contract", "clickstream_sdk", "gateway", "processor", "dashboard"}
)


def imported_names(tree: ast.AST) -> set[str]:
    """Dotted names of every absolute import in `tree`, wherever it stands: `import a.b` gives
    a.b; `from a.b import c` gives a.b and a.b.c (c may be a module or a name in a.b)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def _distribution_files() -> dict[Path, str]:
    return {
        Path(dist.locate_file(file)).resolve(): canonicalize_name(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        for file in dist.files or []
        if file.suffix == ".py"
    }


def distribution_of(module: str) -> str | None:
    """The installed distribution that ships `module` (its deepest importable package)."""
    parts = module.split(".")
    if parts[0] != "google":  # `google` is a namespace shared by many distributions
        owners = importlib.metadata.packages_distributions()
        return canonicalize_name(owners[parts[0]][0]) if parts[0] in owners else None
    for depth in range(len(parts), 1, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:depth]))
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin is not None:
            return _distribution_files().get(Path(spec.origin).resolve())
    return None


def installed_by(requirements: Iterable[str]) -> set[str]:
    """The distributions that installing `requirements` brings, with their dependencies (and
    those of the extras named)."""
    pending = [Requirement(spec) for spec in requirements]
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        extras = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
        for spec in requires:
            dependency = Requirement(spec)
            if dependency.marker is None or any(dependency.marker.evaluate(e) for e in extras):
                pending.append(dependency)
    return found
