"""Every `google_*` resource and data block of terraform/ against the Google provider's schema:
argument and block names, nesting, and required arguments and blocks (tests/provider_schema.py
extracts the schema from a registry package). What the pinned provider added after the schema
was published is listed once, in NEWER_THAN_SCHEMA.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import provider_schema
import pytest
from provider_schema import Block, Schema
from terraform_config import TERRAFORM_DIR

# Arguments and blocks the configuration uses that the provider added after the schema above
# (resource type -> path of the argument or block -> the provider version that added it). A
# newer block's contents are not checked.
NEWER_THAN_SCHEMA: dict[str, dict[str, str]] = {
    "google_cloudfunctions2_function": {
        "service_config.direct_vpc_egress": "7.21.0",
        "service_config.direct_vpc_network_interface": "7.21.0",
    },
}

# Meta-arguments Terraform itself handles, on every resource and data block.
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Schema]:
    """Each provider's schema by the name a block's `provider` gives it."""
    try:
        return {name: provider_schema.load(name) for name in provider_schema.PACKAGES}
    except provider_schema.RegistryUnreachable as reason:
        pytest.skip(f"the provider schema cannot be fetched: {reason}")


@pytest.fixture(scope="module")
def schema(schemas: dict[str, Schema]) -> Schema:
    return schemas["google"]


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def google_blocks(directory: Path) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(kind, type, name, body) of every `resource`/`data` block of a google_* type, bodies as
    python-hcl2 parses them (nested blocks are lists of dicts marked `__is_block__`)."""
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle)
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for kind_type, named in entry.items():
                    for name, body in named.items():
                        if unquote(kind_type).startswith("google_"):
                            yield kind, unquote(kind_type), unquote(name), body


def is_block(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and item.get("__is_block__") for item in value
    )


def problems(body: dict[str, Any], block: Block, path: str, newer: dict[str, str]) -> list[str]:
    """What in `body` the schema `block` does not allow, or requires and `body` lacks (keys
    starting with `__` are python-hcl2's markers: blocks, comments)."""
    found: list[str] = []
    present: set[str] = set()
    nested: list[tuple[str, dict[str, Any]]] = []
    for key, value in body.items():
        if key.startswith("__") or (not path and key in META_ARGUMENTS | META_BLOCKS):
            continue
        if key == "dynamic":
            for entry in value:
                for label, spec in entry.items():
                    name = unquote(label)
                    present.add(name)
                    nested += [(name, content) for content in spec["content"]]
            continue
        present.add(key)
        if is_block(value):
            nested += [(key, item) for item in value]
        elif f"{path}{key}" not in newer and key not in block.arguments:
            kind = "block" if key in block.blocks else "argument"
            found.append(
                f"{path}{key}: no such argument" + (f" (it is a {kind})" * (kind == "block"))
            )
    for name, content in nested:
        where = f"{path}{name}"
        if where in newer:
            continue
        if name not in block.blocks:
            hint = " (it is an argument)" if name in block.arguments else ""
            found.append(f"{where}: no such block{hint}")
            continue
        found += problems(content, block.blocks[name].block, f"{where}.", newer)
    for name, required in block.arguments.items():
        if required and name not in present:
            found.append(f"{path}{name}: required argument missing")
    for name, spec in block.blocks.items():
        if spec.required and name not in present:
            found.append(f"{path}{name}: required block missing")
    return found


def test_every_google_block_matches_the_provider_schema(schemas: dict[str, Schema]) -> None:
    checked = 0
    report: list[str] = []
    for kind, kind_type, name, body in google_blocks(TERRAFORM_DIR):
        schema = schemas[body.get("provider", "${google}").removeprefix("${").removesuffix("}")]
        types = schema.resources if kind == "resource" else schema.data_sources
        assert kind_type in types, (
            f"{kind} {kind_type} is not in provider {schema.provider_version}"
        )
        newer = NEWER_THAN_SCHEMA.get(kind_type, {})
        report += [f"{kind_type}.{name}: {p}" for p in problems(body, types[kind_type], "", newer)]
        checked += 1
    assert checked > 50  # the walk saw the whole configuration
    assert not report, "\n".join(report)


def test_every_provider_block_matches_its_schema(schemas: dict[str, Schema]) -> None:
    """The providers' own settings (user_project_override, billing_project, ...)."""
    with (TERRAFORM_DIR / "versions.tf").open() as handle:
        configured = hcl2.load(handle)["provider"]
    names = set()
    for entry in configured:
        for label, body in entry.items():
            name = unquote(label)
            names.add(name)
            assert not problems(body, schemas[name].provider, "", {}), name
    assert names == set(schemas)


def test_the_check_catches_misnamed_misplaced_and_missing_arguments(schema: Schema) -> None:
    """The walk above is only as good as `problems`: it must see each kind of mistake."""
    body = hcl2.loads(
        'resource "google_sql_user" "u" {\n'
        '  instance = "i"\n  pasword = "typo"\n'
        '  dynamic "settings" {\n    for_each = []\n    content {}\n  }\n}\n'
        'resource "google_sql_database_instance" "i" {\n'
        '  database_version = "POSTGRES_18"\n'
        '  settings {\n    tier = "t"\n    ip_configuration {\n      ipv4_enabled = false\n'
        '      sslmode = "x"\n    }\n    backup_configuration = {}\n  }\n}\n'
    )["resource"]
    user = next(iter(body[0]['"google_sql_user"'].values()))
    instance = next(iter(body[1]['"google_sql_database_instance"'].values()))
    assert set(problems(user, schema.resources["google_sql_user"], "", {})) == {
        "pasword: no such argument",
        "name: required argument missing",
        "settings: no such block",
    }
    assert set(problems(instance, schema.resources["google_sql_database_instance"], "", {})) == {
        "settings.ip_configuration.sslmode: no such argument",
        "settings.backup_configuration: no such argument (it is a block)",
    }


def test_arguments_newer_than_the_schema_are_really_newer(schema: Schema) -> None:
    """Each entry of NEWER_THAN_SCHEMA is absent from the schema (else the list has outlived its
    reason and hides nothing), was added after the schema's provider version, and the pinned
    provider range starts at or after the version that added it."""
    pin = re.search(r'version\s*=\s*"~> ([\d.]+)"', (TERRAFORM_DIR / "versions.tf").read_text())
    assert pin, "versions.tf pins the google provider with ~>"
    floor = version(pin[1])
    for kind_type, paths in NEWER_THAN_SCHEMA.items():
        for path, added in paths.items():
            block = schema.resources[kind_type]
            *parents, leaf = path.split(".")
            for parent in parents:
                if parent not in block.blocks:
                    break
                block = block.blocks[parent].block
            else:
                assert leaf not in block.arguments and leaf not in block.blocks, (kind_type, path)
            assert version(added) > version(schema.provider_version), (kind_type, path)
            assert floor >= version(added)[: len(floor)], (kind_type, path, added)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))
