"""The Google provider's own schema, to check terraform/ offline (tests/test_terraform_schema.py).

No terraform binary or provider can run in CI, but the provider's schema is published in a
registry package: the jsii manifest (`.jsii`) of the npm package `@cdktf/provider-google`
describes every resource and data source as typed structs whose properties link to the
registry's documentation by their Terraform name (`...#ip_configuration`) and say whether they
are optional. This module fetches that package with `npm pack` (never committed), reduces its
manifest to argument and block names, nesting and requiredness, and caches the result by
version, so only the first run pays for the download.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The package of each provider the configuration uses (google-beta for the few resources GA
# lacks), at their newest release.
PACKAGES = {"google": "@cdktf/provider-google", "google-beta": "@cdktf/provider-google-beta"}
PACKAGE_VERSION = "16.12.1"
CACHE_DIR = Path(os.environ.get("CLICKSTREAM_SCHEMA_CACHE", tempfile.gettempdir()))

# What `npm pack` prints when it cannot reach the registry at all (as opposed to a wrong name).
UNREACHABLE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH")

# `{@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/x#arg ...}`
DOC_LINK = re.compile(
    r"registry\.terraform\.io/providers/hashicorp/google(?:-beta)?/([\d.]+)/docs/"
)
ARGUMENT_LINK = re.compile(r"/docs(?:/(?:resources|data-sources)/\w+)?#(\w+) ")
CLASS_LINK = re.compile(r"/docs/(resources|data-sources)/\w+ (google_\w+)\}")


class RegistryUnreachable(RuntimeError):
    """npm could not reach its registry: the check cannot run here (not a failure of ours)."""


@dataclass
class Block:
    """One schema level: its arguments (name -> required) and nested blocks."""

    arguments: dict[str, bool] = field(default_factory=dict)
    blocks: dict[str, Nested] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "arguments": self.arguments,
            "blocks": {name: nested.to_json() for name, nested in self.blocks.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        return cls(
            dict(data["arguments"]),
            {name: Nested.from_json(n) for name, n in data["blocks"].items()},
        )


@dataclass
class Nested:
    required: bool
    block: Block

    def to_json(self) -> dict[str, Any]:
        return {"required": self.required, "block": self.block.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Nested:
        return cls(data["required"], Block.from_json(data["block"]))


@dataclass
class Schema:
    provider_version: str
    provider: Block  # the `provider "google" {...}` block's own arguments
    resources: dict[str, Block]
    data_sources: dict[str, Block]

    def to_json(self) -> dict[str, Any]:
        return {
            "provider_version": self.provider_version,
            "provider": self.provider.to_json(),
            "resources": {k: v.to_json() for k, v in self.resources.items()},
            "data_sources": {k: v.to_json() for k, v in self.data_sources.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schema:
        return cls(
            data["provider_version"],
            Block.from_json(data["provider"]),
            {k: Block.from_json(v) for k, v in data["resources"].items()},
            {k: Block.from_json(v) for k, v in data["data_sources"].items()},
        )


def struct_of(type_ref: dict[str, Any], types: dict[str, Any]) -> str | None:
    """The struct fqn a property's type names, directly, as a list's element, or in a union
    (cdktf types blocks as `Struct | IResolvable | Struct[]`); None for plain arguments."""
    if "fqn" in type_ref:
        found = types.get(type_ref["fqn"])
        return type_ref["fqn"] if found and found.get("datatype") else None
    if "collection" in type_ref:
        return struct_of(type_ref["collection"]["elementtype"], types)
    if "union" in type_ref:
        for member in type_ref["union"]["types"]:
            if fqn := struct_of(member, types):
                return fqn
    return None


def block_of(fqn: str, types: dict[str, Any], depth: int = 0) -> Block:
    if depth > 20:
        raise ValueError(f"nesting too deep at {fqn}")
    block = Block()
    for prop in types[fqn].get("properties", []):
        # The link sits in the summary, the remarks or a custom tag; the few properties
        # without one are named as cdktf names everything, camelCase for snake_case.
        link = ARGUMENT_LINK.search(json.dumps(prop.get("docs", {})))
        name = link[1] if link else re.sub(r"(?<!^)([A-Z])", r"_\1", prop["name"]).lower()
        required = not prop.get("optional", False)
        nested = struct_of(prop["type"], types)
        if nested is None:
            block.arguments[name] = required
        else:
            block.blocks[name] = Nested(required, block_of(nested, types, depth + 1))
    return block


def schema_from_manifest(manifest: dict[str, Any]) -> Schema:
    types = manifest["types"]
    resources: dict[str, Block] = {}
    data_sources: dict[str, Block] = {}
    providers: list[Block] = []
    versions: set[str] = set()
    for spec in types.values():
        if spec.get("kind") == "class" and spec.get("base") == "cdktf.TerraformProvider":
            (config,) = [p for p in spec["initializer"]["parameters"] if p["name"] == "config"]
            providers.append(block_of(config["type"]["fqn"], types))
            continue
        if spec.get("kind") != "class" or spec.get("base") not in {
            "cdktf.TerraformResource",
            "cdktf.TerraformDataSource",
        }:
            continue
        summary = spec.get("docs", {}).get("summary", "")
        link = CLASS_LINK.search(summary)
        if link is None:
            continue
        versions |= set(DOC_LINK.findall(summary))
        (config,) = [p for p in spec["initializer"]["parameters"] if p["name"] == "config"]
        target = resources if link[1] == "resources" else data_sources
        target[link[2]] = block_of(config["type"]["fqn"], types)
    if len(versions) != 1:
        raise ValueError(f"the manifest documents provider versions {versions}")
    (provider,) = providers
    return Schema(versions.pop(), provider, resources, data_sources)


def download_manifest(package: str, into: Path) -> dict[str, Any]:
    command = ["npm", "pack", f"{package}@{PACKAGE_VERSION}", "--loglevel=error"]
    result = subprocess.run(
        [*command, "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=into,
    )
    if result.returncode != 0:
        if unreachable := UNREACHABLE.search(result.stderr):
            raise RegistryUnreachable(f"npm: {unreachable[0]}")
        raise RuntimeError(f"npm pack failed: {result.stderr}")
    (archive,) = into.glob("*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("package/.jsii")
        assert member is not None, "the package has no jsii manifest"
        manifest: dict[str, Any] = json.load(member)
    return manifest


def load(provider: str = "google") -> Schema:
    """A provider's schema, from the cache or (once per version) the npm registry. Raises
    RegistryUnreachable when npm is missing or cannot reach its registry."""
    cache = CACHE_DIR / f"clickstream-provider-{provider}-schema-{PACKAGE_VERSION}-v2.json"
    if cache.exists():
        return Schema.from_json(json.loads(cache.read_text()))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            schema = schema_from_manifest(download_manifest(PACKAGES[provider], Path(scratch)))
    except FileNotFoundError as missing:  # no npm on this machine
        raise RegistryUnreachable(f"npm is not installed: {missing}") from missing
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(schema.to_json()))
    partial.replace(cache)  # atomic: a parallel run reads the whole file or none
    return schema
