"""terraform/ parsed with python-hcl2 into plain Python values, for tests/test_terraform.py.

python-hcl2 keeps string literals quoted ('"abc"') and expressions wrapped ('${var.x}'); here
literals lose their quotes and expressions stay as they are, so a test can tell them apart.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

TERRAFORM_DIR = Path(__file__).resolve().parent.parent / "terraform"

# `var.x`, `local.x`, `data.T.x`, `ephemeral.T.x`, or a resource `T.x` of a provider this
# configuration uses, not preceded by a word character or a dot (so `foo.var.x` or
# `xgoogle_y.z` never match).
REFERENCE = re.compile(
    r"(?<![\w.\"/-])(var|local|(?:data|ephemeral)\.[a-z0-9_]+|(?:google|random|archive)_[a-z0-9_]+)"
    r"\.([a-z0-9_]+)"
)


def plain(value: Any) -> Any:
    """Strip python-hcl2's quotes from literals and keys, and its block markers."""
    if isinstance(value, dict):
        # Keys starting with `__` are python-hcl2's markers (blocks, comments).
        return {plain(k): plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass
class Config:
    directory: Path = TERRAFORM_DIR
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ephemerals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == kind}

    def render(self, value: str) -> str:
        """A string with each `${var.x}` (its default) and `${local.x}` that is itself a
        string substituted, as Terraform would; other expressions stay as they are."""

        def substitute(match: re.Match[str]) -> str:
            resolved = self.resolve(match[0])
            return self.render(resolved) if isinstance(resolved, str) else match[0]

        return re.sub(r"\$\{(?:var|local)\.[a-z0-9_.]+\}", substitute, value)

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
    config = Config(directory)
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
        for block in parsed.get("ephemeral", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.ephemerals[(kind, name)] = body
        for block in parsed.get("variable", []):
            config.variables.update(block)
        for block in parsed.get("locals", []):
            config.locals.update(block)
        for block in parsed.get("output", []):
            config.outputs.update(block)
    return config


# --- the source archives (storage.tf), evaluated as Terraform would ----------------------------

# One `{for f in SOURCE : f => "BASE/${f}" [if length(regexall(local.X, f)) == 0]}` of a
# `merge(...)`, SOURCE being `fileset(BASE, "PATTERN")` or a list of literal names.
_COMPREHENSION = re.compile(
    r"\{for (?P<var>\w+) in "
    r'(?:fileset\((?P<base>"[^"]*"|local\.\w+), "(?P<pattern>[^"]+)"\)|\[(?P<names>[^\]]*)\])'
    r' : (?P=var) => "(?P<target>[^"]*)"'
    r"(?: if length\(regexall\(local\.(?P<exclude>\w+), (?P=var)\)\) == 0)?\}"
)


def hcl_string(value: str) -> str:
    """A string literal's value: python-hcl2 keeps HCL's escapes (`\\\\`, `\\"`)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), value)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Terraform's `fileset` pattern (doublestar: `*`, `**`, `?`, `{a,b}`) as a regex over
    slash-separated paths relative to the base folder."""
    out: list[str] = []
    i = 0
    depth = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "[":
            raise ValueError(f"character classes are not supported here: {pattern}")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError(f"unbalanced braces: {pattern}")
    return re.compile("".join(out))


def fileset(base: Path, pattern: str) -> set[str]:
    """Terraform's `fileset(base, pattern)`: the files (not folders) under `base` whose path
    relative to it matches."""
    regex = glob_regex(pattern)
    # The first segment, when it is one, prunes the walk (the repository's .venv is large).
    depth = 0
    first = None
    for i, c in enumerate(pattern):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "/" and depth == 0:
            first = None if "**" in pattern[:i] else glob_regex(pattern[:i])
            break
    found: set[str] = set()
    for folder, folders, files in os.walk(base):
        relative = Path(folder).relative_to(base)
        if first is not None and relative == Path("."):
            folders[:] = [f for f in folders if first.fullmatch(f)]
        for name in files:
            path = (relative / name).as_posix()
            if regex.fullmatch(path):
                found.add(path)
    return found


def archive_files(config: Config, local: str, module: Path) -> dict[str, Path]:
    """The files of an archive local (`processor_files`, ...) of storage.tf as Terraform would
    compute them with `path.module` = `module`: archive name -> source file. Any expression
    this evaluator does not understand raises, so a new form cannot be checked silently."""
    expression = config.locals[local]

    def interpolate(text: str) -> str:
        text = text.replace("${path.module}", str(module))
        return re.sub(r"\$\{local\.(\w+)\}", lambda m: interpolate(config.locals[m[1]]), text)

    def base_of(source: str) -> Path:
        if source.startswith("local."):
            return Path(interpolate(config.locals[source.removeprefix("local.")]))
        return Path(interpolate(source.strip('"')))

    comprehensions = list(_COMPREHENSION.finditer(expression))
    rebuilt = "${merge(" + ", ".join(m[0] for m in comprehensions) + ")}"
    if not comprehensions or rebuilt != expression:
        raise ValueError(f"local.{local} is not a merge of known comprehensions: {expression}")
    files: dict[str, Path] = {}
    for match in comprehensions:
        if match["names"] is not None:
            names = {hcl_string(n) for n in re.findall(r'"([^"]*)"', match["names"])}
        else:
            names = fileset(base_of(match["base"]), hcl_string(match["pattern"]))
        if match["exclude"]:
            excluded = re.compile(hcl_string(config.locals[match["exclude"]]))
            names = {n for n in names if not excluded.search(n)}
        for name in names:
            files[name] = Path(
                interpolate(match["target"].replace("${" + match["var"] + "}", name))
            )
    return files


# --- what a distribution of this repository installs (its pyproject.toml) -----------------------

# What a local `pip install` (build/, *.egg-info/) or a run (__pycache__/) leaves in a folder:
# storage.tf's own pattern, which keeps it out of every archive.
LEFTOVER = re.compile(hcl_string(load().locals["install_leftovers"]))


def project_files(root: Path, project: str, *, build: bool = True) -> set[str]:
    """What the distribution in `root/project` ("" for the root one) installs: its packages'
    modules and package data; with `build`, also what building it reads (pyproject.toml, its
    readme). Paths relative to `root`."""
    folder = root / project
    pyproject = tomllib.loads((folder / "pyproject.toml").read_text())
    setuptools = pyproject.get("tool", {}).get("setuptools", {})
    found = set()
    if build:
        found.add("pyproject.toml")
        if readme := pyproject["project"].get("readme"):
            found.add(readme)
    packages: dict[str, Path] = {}
    if isinstance(setuptools.get("packages"), list):
        mapping = setuptools.get("package-dir", {})
        for package in setuptools["packages"]:
            top, *rest = package.split(".")
            packages[package] = (folder / mapping.get(top, top)).joinpath(*rest)
    else:  # [tool.setuptools.packages.find]: namespace packages, every matching folder
        include = setuptools["packages"]["find"]["include"]
        tops = [pattern.split(".")[0] for pattern in include]
        for directory, folders, _ in os.walk(folder):
            relative = Path(directory).relative_to(folder)
            if relative == Path("."):  # prune the walk: the repository's .venv is large
                folders[:] = [f for f in folders if any(fnmatch.fnmatchcase(f, t) for t in tops)]
            dotted = ".".join(relative.parts)
            if LEFTOVER.search(relative.as_posix() + "/") or not dotted:
                continue
            if any(fnmatch.fnmatchcase(dotted, pattern) for pattern in include):
                packages[dotted] = Path(directory)
    package_data = setuptools.get("package-data", {})
    for package, package_folder in packages.items():
        found |= {p.relative_to(folder).as_posix() for p in package_folder.glob("*.py")}
        for pattern in package_data.get(package, []):
            found |= {p.relative_to(folder).as_posix() for p in package_folder.glob(pattern)}
    return {f"{project}/{f}" if project else f for f in found}


# --- the dashboard VM's start-up script (templates/dashboard-startup.sh.tftpl) ----------------


def startup_script(config: Config) -> tuple[str, dict[str, str]]:
    """The start-up template's text and the values dashboard.tf passes it (name -> expression)."""
    call = config.resources[("google_compute_instance", "dashboard")]["metadata"]["startup-script"]
    match = re.fullmatch(
        r'\$\{templatefile\("\$\{path\.module\}/([^"]+)", \{(.*)\}\)\}', call, re.S
    )
    assert match, call
    passed = dict(re.findall(r'(\w+) = ("[^"]*"|[^,]+)', match[2]))
    return (config.directory / match[1]).read_text(), {k: v.strip() for k, v in passed.items()}


@dataclass
class Install:
    """One `install_archive` of the start-up script: the archive (storage.tf's
    `data.archive_file` name) unzipped and pip installed into `venv` with `args`."""

    archive: str
    venv: str
    args: list[str]


def startup_installs(config: Config) -> dict[str, Install]:
    """The archives the VM installs, by archive name, traced from the template through the
    values passed to it and the bucket objects to storage.tf's archives."""
    text, passed = startup_script(config)
    text = text.replace("\\\n", " ")
    app = re.search(r"^APP=(\S+)$", text, re.M)
    assert app, "the start-up script sets APP"
    installs: dict[str, Install] = {}
    for line in re.findall(r"^install_archive (.+)$", text, re.M):
        _, venv, uri, *args = shlex.split(line)
        variable = re.fullmatch(r"\$\{(\w+)\}", uri)
        assert variable, line
        bucket_object = re.search(r"google_storage_bucket_object\.(\w+)\.name", passed[variable[1]])
        assert bucket_object, passed[variable[1]]
        source = config.resources[("google_storage_bucket_object", bucket_object[1])]["source"]
        archive = re.fullmatch(r"\$\{data\.archive_file\.(\w+)\.output_path\}", source)
        assert archive, source
        installs[archive[1]] = Install(archive[1], venv.replace("$APP", app[1]), args)
    return installs


def startup_commands(config: Config) -> dict[str, tuple[str, list[str]]]:
    """The `clickstream` commands the VM runs, by where they run (a systemd unit's name, or the
    wrapper `clickstream-admin`): the venv they run from and their arguments."""
    text, _ = startup_script(config)
    commands: dict[str, tuple[str, list[str]]] = {}
    for name, body in re.findall(
        r"^cat > (\S+) <<'(?:UNIT|SH)'\n(.*?)^(?:UNIT|SH)$", text, re.M | re.S
    ):
        for line in body.splitlines():
            command = re.search(r"(\S+)/bin/clickstream( .*)?$", line)
            if command and line.startswith(("ExecStart=", "exec ")):
                commands[Path(name).name] = (command[1], shlex.split(command[2] or ""))
    return commands
