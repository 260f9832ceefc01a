"""terraform/ parsed with python-hcl2 into plain Python values, for tests/test_terraform.py.

python-hcl2 keeps string literals quoted ('"abc"') and expressions wrapped ('${var.x}'); here
literals lose their quotes and expressions stay as they are, so a test can tell them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

TERRAFORM_DIR = Path(__file__).resolve().parent.parent / "terraform"

# `var.x`, `local.x`, `data.T.x`, or a resource `T.x` of a provider this configuration uses,
# not preceded by a word character or a dot (so `foo.var.x` or `xgoogle_y.z` never match).
REFERENCE = re.compile(
    r"(?<![\w.\"/-])(var|local|data\.[a-z0-9_]+|(?:google|random|archive)_[a-z0-9_]+)\.([a-z0-9_]+)"
)


def plain(value: Any) -> Any:
    """Strip python-hcl2's quotes from literals and keys, and its block markers."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass
class Config:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == kind}

    def resolve(self, value: Any) -> Any:
        """The value of a literal, `${var.x}` (its default) or `${local.a.b}`; else unchanged."""
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\$\{(var|local)\.([a-z0-9_.]+)\}", value)
        if match is None:
            return value
        kind, path = match.groups()
        first, *rest = path.split(".")
        current = self.variables[first].get("default") if kind == "var" else self.locals[first]
        for part in rest:
            current = current[part]
        return self.resolve(current)


def references(value: Any) -> set[tuple[str, str]]:
    """Every (kind, name) an expression names: ('var', 'x'), ('google_y', 'z'), ..."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= references(v)
    elif isinstance(value, list):
        for v in value:
            found |= references(v)
    elif isinstance(value, str):
        found |= set(REFERENCE.findall(value))
    return found


def load(directory: Path = TERRAFORM_DIR) -> Config:
    config = Config()
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            parsed = plain(hcl2.load(handle))
        config.files[path.name] = parsed
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.resources[(kind, name)] = body
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.data[(kind, name)] = body
        for block in parsed.get("variable", []):
            config.variables.update(block)
        for block in parsed.get("locals", []):
            config.locals.update(block)
        for block in parsed.get("output", []):
            config.outputs.update(block)
    return config
