"""The deployable artifacts hold their deployable and the contract, nothing else, and each
installs alone (the README's folder table).

Every artifact is built here the way Terraform or Docker builds it, from the same declarations:
- the function, dashboard and operations archives from storage.tf's expressions, evaluated by
  tests/terraform_config.py (and by Terraform itself where a terraform binary is at hand), then
  zipped and unzipped;
- the gateway image's build context from images/gateway-context.sh, and what the image build
  takes of it from the Dockerfile's COPY and RUN lines.
They come from a copy of the work tree in which a local non-editable install and a run left
build/, dist/, *.egg-info/ and __pycache__/ behind in every package folder: none of it may get in.

The slow tests install each artifact, from a copy, into a fresh virtual environment holding only
what it declares (built concurrently, with pip's cache; the function with its requirements.txt
alone, as its build does) and check there that its entry point imports and its commands parse,
and that the other parts are not importable.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from imports_testing import FIRST_PARTY
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from terraform_config import (
    LEFTOVER,
    TERRAFORM_DIR,
    Config,
    archive_files,
    load,
    project_files,
    startup_commands,
    startup_installs,
)

REPO = TERRAFORM_DIR.parent
PARTS = ("clickstream_contract", "gateway", "processor", "dashboard", "clickstream_sdk")
CONTEXT_SCRIPT = "terraform/images/gateway-context.sh"
DOCKERFILE = "terraform/images/gateway.Dockerfile"
CLOUDBUILD = "terraform/images/cloudbuild.yaml"
# Planted in every package folder, in each kind of folder a local install or a run leaves.
LEFTOVER_FOLDERS = ("build/lib/{part}", "dist", "{part}.egg-info", "__pycache__")
LEFTOVER_FILES = ("stale.py", "stale.sql", "pyproject.toml", "README.md", "stale.html", "stale.js")


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def top_level(files: Iterable[str]) -> set[str]:
    return {f.split("/")[0] for f in files}


def sources_in(root: Path, folder: str) -> set[str]:
    """Every file of a folder of the work tree but what an install or a run left there."""
    return {
        f"{folder}/{f}" for f in files_in(root / folder) if not LEFTOVER.search(f"{folder}/{f}")
    }


# --- the artifacts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worktree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the work tree (hidden folders aside), with install and run leftovers planted
    in every package folder, each holding files of the kinds the archives take."""
    root = tmp_path_factory.mktemp("worktree")
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name == "test-artifacts":
            continue
        if entry.is_dir():
            ignore = shutil.ignore_patterns(".terraform", "*.tfstate*", "build")
            shutil.copytree(
                entry, root / entry.name, ignore=ignore if entry.name == "terraform" else None
            )
        else:
            shutil.copy2(entry, root / entry.name)
    for part in sorted(FIRST_PARTY):
        for folder in LEFTOVER_FOLDERS:
            planted = root / part / folder.format(part=part)
            planted.mkdir(parents=True, exist_ok=True)
            for name in LEFTOVER_FILES:
                (planted / name).write_text("# left by a local install\n")
    return root


@pytest.fixture(scope="module")
def tf(worktree: Path) -> Config:
    return load(worktree / "terraform")


def archive_locals(config: Config) -> dict[str, str]:
    """storage.tf's archives: archive name -> the local listing its files."""
    found = {}
    for (kind, name), body in config.data.items():
        if kind == "archive_file":
            (dynamic,) = body["dynamic"]
            local = re.fullmatch(r"\$\{local\.(\w+)\}", dynamic["source"]["for_each"])
            assert local, dynamic
            found[name] = local[1]
    return found


def build_archive(config: Config, local: str, module: Path, target: Path) -> Path:
    """Zip the files as `archive_file` does (each `content = file(path)`), then unzip them as the
    function's build and the VM do."""
    path = target.with_suffix(".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in sorted(archive_files(config, local, module).items()):
            archive.writestr(name, source.read_text())
    with zipfile.ZipFile(path) as archive:
        archive.extractall(target)
    return target


def build_context(worktree: Path, target: Path) -> Path:
    """The gateway image's build context: what gateway-context.sh writes, unpacked."""
    result = subprocess.run(
        ["sh", str(worktree / CONTEXT_SCRIPT)], capture_output=True, timeout=60, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="module")
def artifacts(
    worktree: Path, tf: Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each artifact unpacked: the archives by their storage.tf name, and "gateway-image", the
    image's build context."""
    root = tmp_path_factory.mktemp("artifacts")
    built = {
        name: build_archive(tf, local, tf.directory, root / name)
        for name, local in archive_locals(tf).items()
    }
    built["gateway-image"] = build_context(worktree, root / "gateway-image")
    return built


def expected_files(worktree: Path, artifact: str) -> set[str]:
    """What each artifact must hold, exactly, derived from the distributions' pyprojects."""
    if artifact == "processor":  # sources only: the function's build installs requirements.txt
        return {
            "main.py",
            "requirements.txt",
            "requirements.lock",
            *project_files(worktree, "processor", build=False),
            *project_files(worktree, "clickstream_contract", build=False),
        }
    if artifact == "dashboard":
        return {
            "requirements.lock",
            *project_files(worktree, "clickstream_contract"),
            *project_files(worktree, "dashboard"),
        }
    if artifact == "operations":  # the development distribution and every part
        return {
            "requirements.lock",
            *project_files(worktree, ""),
            *(f for part in PARTS for f in project_files(worktree, part)),
        }
    if artifact == "gateway-image":  # whole folders (COPY takes them whole), and the Dockerfile
        return {
            "requirements.lock",
            DOCKERFILE,
            *sources_in(worktree, "clickstream_contract"),
            *sources_in(worktree, "gateway"),
        }
    raise AssertionError(f"no expectation for {artifact}")


EXPECTED_TOP_LEVEL = {
    "processor": {
        "main.py",
        "requirements.txt",
        "requirements.lock",
        "processor",
        "clickstream_contract",
    },
    "dashboard": {"requirements.lock", "clickstream_contract", "dashboard"},
    "operations": {"pyproject.toml", "README.md", "requirements.lock", *FIRST_PARTY},
    "gateway-image": {"requirements.lock", "clickstream_contract", "gateway", "terraform"},
}


def test_storage_builds_the_three_archives(tf: Config) -> None:
    assert archive_locals(tf) == {
        "processor": "processor_files",
        "dashboard": "dashboard_files",
        "operations": "operations_files",
    }


@pytest.mark.parametrize("artifact", sorted(EXPECTED_TOP_LEVEL))
def test_artifact_holds_exactly_its_parts(
    artifact: str, artifacts: dict[str, Path], worktree: Path
) -> None:
    files = files_in(artifacts[artifact])
    assert top_level(files) == EXPECTED_TOP_LEVEL[artifact]
    leftovers = sorted(f for f in files if LEFTOVER.search(f) or "stale" in f)
    assert not leftovers, f"{artifact} takes what a local install left: {leftovers}"
    expected = expected_files(worktree, artifact)
    assert not expected - files, f"{artifact} lacks {sorted(expected - files)}"
    assert not files - expected, f"{artifact} takes more: {sorted(files - expected)}"
    for name in files:
        assert (artifacts[artifact] / name).read_bytes() == (
            worktree / source_of(name)
        ).read_bytes()


def source_of(name: str) -> str:
    """Where an archived file comes from in the work tree (the function's two root files come
    from terraform/function/)."""
    return f"terraform/function/{name}" if name in {"main.py", "requirements.txt"} else name


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_lists_the_same_archive_files(tf: Config, worktree: Path) -> None:
    """The Python evaluation of storage.tf's expressions is Terraform's (its own `fileset`,
    `regexall`, `merge`), on the same tree with the same leftovers."""
    # A module of storage.tf's locals alone (the providers cannot be installed here), beside
    # terraform/ so that `path.module/..` is the same root.
    module = worktree / "terraform-locals"
    shutil.copytree(tf.directory / "function", module / "function")
    storage = (tf.directory / "storage.tf").read_text()
    block = re.search(r"^locals \{\n.*?^\}\n", storage, re.M | re.S)
    assert block, "storage.tf has a locals block"
    (module / "main.tf").write_text(block[0])
    names = archive_locals(tf).values()
    try:
        result = subprocess.run(
            ["terraform", "console"],
            input="jsonencode({" + ", ".join(f"{n} = local.{n}" for n in names) + "})\n",
            cwd=module,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"},
        )
    finally:
        shutil.rmtree(module)
    assert result.returncode == 0, result.stderr
    computed = json.loads(json.loads(result.stdout.strip().splitlines()[-1]))
    for name in names:
        ours = archive_files(tf, name, tf.directory)
        assert set(computed[name]) == set(ours), name
        for key, value in computed[name].items():
            assert value.endswith(f"/{key}"), (key, value)


# --- the gateway image's declarations ---------------------------------------------------------


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", "", path.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def gateway_build(context: Path) -> tuple[list[tuple[list[str], str]], list[str], list[str]]:
    """The build stage's COPYs (sources, destination) and its pip install's arguments, and the
    final image's command line (ENTRYPOINT + CMD)."""
    build, final = dockerfile_stages(context / DOCKERFILE)
    copies = []
    runs = []
    for instruction, rest in build[1:]:
        if instruction == "COPY":
            *sources, destination = shlex.split(rest)
            copies.append((sources, destination))
        elif instruction == "RUN":
            runs.append(rest)
        else:
            assert instruction == "WORKDIR", f"unexpected {instruction} in the build stage"
    (run,) = runs
    steps = [shlex.split(step) for step in run.split("&&")]
    assert steps[0] == ["python", "-m", "venv", "/venv"], run
    assert steps[1][:2] == ["/venv/bin/pip", "install"] and len(steps) == 2, run
    final_copies = [rest for instruction, rest in final if instruction == "COPY"]
    assert final_copies == ["--from=build /venv /venv"], "the image takes only the venv"
    entrypoint = next(
        json.loads(rest) for instruction, rest in final if instruction == "ENTRYPOINT"
    )
    cmd = next(json.loads(rest) for instruction, rest in final if instruction == "CMD")
    return copies, steps[1][2:], [*entrypoint, *cmd]


def test_gateway_image_copies_the_lock_the_contract_and_the_gateway(
    artifacts: dict[str, Path],
) -> None:
    copies, _, command = gateway_build(artifacts["gateway-image"])
    sources = [source for sources, _ in copies for source in sources]
    assert sorted(sources) == ["clickstream_contract", "gateway", "requirements.lock"]
    for source in sources:
        assert (artifacts["gateway-image"] / source).exists(), f"{source} is not in the context"
    config = load()
    template = config.resources[("google_cloud_run_v2_service", "gateway")]["template"][0]
    (ports,) = template["containers"][0]["ports"]
    options = dict(zip(command[2::2], command[3::2], strict=False))
    assert command[:2] == ["clickstream", "gateway"]
    assert options["--host"] == "0.0.0.0"  # reachable from Cloud Run's front end
    assert options["--port"] == str(config.resolve(ports["container_port"]))


def test_cloud_build_builds_from_the_gateway_context() -> None:
    config = yaml.safe_load((REPO / CLOUDBUILD).read_text())
    (step,) = config["steps"]
    script = " ".join(step["args"])
    pipeline = [shlex.split(part) for part in script.split("&&")[-1].split("|")]
    assert pipeline[0] == ["sh", CONTEXT_SCRIPT]
    docker = pipeline[1]
    assert docker[:2] == ["docker", "build"] and docker[-1] == "-"  # the context is stdin
    assert docker[docker.index("-f") + 1] == DOCKERFILE
    assert docker[docker.index("-t") + 1] == "${_IMAGE}" and config["images"] == ["${_IMAGE}"]
    assert "pipefail" in script  # a failing context script fails the build


# --- installs, in fresh virtual environments ---------------------------------------------------


def run(command: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, (
        f"{shlex.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def new_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin" / "python"


def pip_install(python: Path, args: list[str], cwd: Path) -> None:
    """pip as the artifact's build runs it, with pip's cache (the image's --no-cache-dir only
    keeps the cache out of the image)."""
    args = [a for a in args if a not in {"--no-cache-dir", "--quiet", "-q"}]
    run([str(python), "-m", "pip", "install", "--quiet", *args], cwd=cwd)


def copy_of(artifact: Path, target: Path) -> Path:
    """Install from a copy: pip's non-editable install writes build/ and egg-info into it."""
    shutil.copytree(artifact, target)
    return target


def function_venv(artifact: Path, root: Path) -> tuple[Path, Path]:
    """The Cloud Function's build: `pip install -r requirements.txt` beside the sources."""
    source = copy_of(artifact, root / "source")
    python = new_venv(root / "venv")
    pip_install(python, ["-r", "requirements.txt"], cwd=source)
    return python, source


def image_venv(context: Path, root: Path) -> tuple[Path, Path]:
    """The image's build stage: its COPYs into WORKDIR, then its RUN with /venv moved here."""
    copies, pip_args, _ = gateway_build(context)
    workdir = root / "src"
    workdir.mkdir(parents=True)
    for sources, destination in copies:
        for source in sources:
            target = workdir / destination
            if (context / source).is_dir():
                shutil.copytree(context / source, target)
            else:
                shutil.copy2(
                    context / source, target / source if destination.endswith("/") else target
                )
    python = new_venv(root / "venv")
    pip_install(python, pip_args, cwd=workdir)
    return python, workdir


def vm_venv(artifact: Path, args: list[str], root: Path) -> tuple[Path, Path]:
    """The VM's `install_archive`: unzipped, then pip install -c requirements.lock FOLDERS."""
    source = copy_of(artifact, root / "source")
    python = new_venv(root / "venv")
    pip_install(python, ["-c", "requirements.lock", *args], cwd=source)
    return python, source


def sdk_venv(worktree: Path, root: Path) -> tuple[Path, Path]:
    """What a shop does: the SDK (and the contract it needs), within the lock."""
    source = root / "source"
    for folder in ("clickstream_contract", "clickstream_sdk"):
        shutil.copytree(
            worktree / folder,
            source / folder,
            ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"),
        )
    shutil.copy2(worktree / "requirements.lock", source)
    python = new_venv(root / "venv")
    args = ["-c", "requirements.lock", "./clickstream_contract", "./clickstream_sdk"]
    pip_install(python, args, cwd=source)
    return python, source


@pytest.fixture(scope="module")
def venvs(
    artifacts: dict[str, Path],
    worktree: Path,
    tf: Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[tuple[Path, Path]]]]:
    """Every artifact's venv, built concurrently (each test waits for its own): name ->
    (the venv's python, the folder it was installed from)."""
    root = tmp_path_factory.mktemp("venvs")
    installs = startup_installs(tf)
    jobs: dict[str, Callable[[], tuple[Path, Path]]] = {
        "function": lambda: function_venv(artifacts["processor"], root / "function"),
        "gateway": lambda: image_venv(artifacts["gateway-image"], root / "gateway"),
        "sdk": lambda: sdk_venv(worktree, root / "sdk"),
    }
    for name, install in installs.items():
        jobs[name] = functools.partial(vm_venv, artifacts[name], install.args, root / name)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        yield {name: pool.submit(job) for name, job in jobs.items()}


PROBE = textwrap.dedent(
    """
    import importlib, importlib.util, json, sys
    spec = json.loads(sys.argv[1])
    sys.path[:0] = spec["path"]
    exec(spec["code"])
    for module in spec["present"]:
        importlib.import_module(module)
    print(json.dumps([m for m in spec["absent"] if importlib.util.find_spec(m) is not None]))
    """
)


def probe(
    python: Path,
    cwd: Path,
    present: Iterable[str],
    absent: Iterable[str],
    path: Iterable[Path] = (),
    code: str = "",
) -> None:
    """In the venv, isolated (-I: no current folder, PYTHONPATH or user site on sys.path), the
    `present` modules import and the `absent` ones cannot be found."""
    spec = {"path": [str(p) for p in path], "code": code, "present": list(present)}
    spec["absent"] = list(absent)
    found = json.loads(run([str(python), "-I", "-c", PROBE, json.dumps(spec)], cwd=cwd))
    assert not found, f"importable here, and should not be: {found}"


def site_packages(python: Path) -> Path:
    (site,) = python.parent.parent.glob("lib/python*/site-packages")
    return site


def distributions(python: Path) -> dict[str, importlib.metadata.Distribution]:
    return {
        canonicalize_name(d.metadata["Name"]): d
        for d in importlib.metadata.distributions(path=[str(site_packages(python))])
    }


def requirement_closure(python: Path, roots: Iterable[str]) -> set[str]:
    """The venv's distributions that `roots` (requirement strings) need, with their extras."""
    installed = distributions(python)
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in roots]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(name)
        for spec in installed[name].requires or []:
            dependency = Requirement(spec)
            extras = {"", *requirement.extras}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": e}) for e in extras
            ):
                pending.append(dependency)
    return found


def locked_versions() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(pin.name): str(pin.specifier).removeprefix("==") for pin in pins}


def check_only_declared(python: Path, roots: Iterable[str]) -> set[str]:
    """The venv holds what `roots` need and nothing else (pip and setuptools aside), each
    third-party distribution at its version in requirements.lock."""
    found = distributions(python)
    installed = set(found) - {"pip", "setuptools"}
    needed = requirement_closure(python, roots)
    assert installed == needed, f"extra {installed - needed}, missing {needed - installed}"
    locked = locked_versions()
    unlocked = {
        name: found[name].version
        for name in installed - set(first_party(installed))
        if locked.get(name) != found[name].version
    }
    assert unlocked == {}, "installed at a version requirements.lock does not pin"
    return installed


def commands_of(python: Path) -> set[str]:
    return {
        ep.name
        for d in distributions(python).values()
        for ep in d.entry_points
        if ep.group == "clickstream.commands"
    }


def clickstream_help(python: Path, args: list[str], cwd: Path) -> str:
    """`clickstream ARGS --help` from the venv's console script: ARGS parse, the command loads."""
    return run([str(python.parent / "clickstream"), *args, "--help"], cwd=cwd)


def distribution_name(part: str) -> str:
    pyproject = tomllib.loads((REPO / part / "pyproject.toml").read_text())
    return canonicalize_name(pyproject["project"]["name"])


def first_party(installed: set[str]) -> set[str]:
    return {name for name in installed if name.startswith("clickstream")}


@pytest.mark.slow
def test_function_imports_from_its_archive_with_its_requirements_alone(
    venvs: dict[str, concurrent.futures.Future[tuple[Path, Path]]], tf: Config, tmp_path: Path
) -> None:
    python, source = venvs["function"].result()
    requirements = (source / "requirements.txt").read_text().splitlines()
    installed = check_only_declared(
        python, [r for r in requirements if r.strip() and r[0] not in "#-"]
    )
    assert not first_party(installed), "the parts ride in the archive as sources"
    build = tf.resources[("google_cloudfunctions2_function", "processor")]["build_config"][0]
    # Cloud Functions' runtime is one the processor supports (requires-python >= 3.11).
    version = build["runtime"].removeprefix("python")
    assert (int(version[0]), int(version[1:])) >= (3, 11), build["runtime"]
    # What the Functions Framework does with the deployed source: load main.py, find the target.
    load = (
        "import functions_framework, main\n"
        f"functions_framework.create_app({build['entry_point']!r}, 'main.py', 'cloudevent')\n"
        f"assert callable(main.{build['entry_point']})\n"
    )
    others = [m for m in FIRST_PARTY if m not in {"processor", "clickstream_contract"}]
    probe(python, source, ["main", "processor.function"], others, path=[source], code=load)


@pytest.mark.slow
def test_gateway_image_runs_the_gateway_and_holds_no_other_part(
    venvs: dict[str, concurrent.futures.Future[tuple[Path, Path]]],
    artifacts: dict[str, Path],
    tmp_path: Path,
) -> None:
    python, _ = venvs["gateway"].result()
    installed = check_only_declared(python, ["clickstream-contract", "clickstream-gateway"])
    assert first_party(installed) == {"clickstream-contract", "clickstream-gateway"}
    assert commands_of(python) == {"gateway"}
    _, _, command = gateway_build(artifacts["gateway-image"])
    assert command[0] == "clickstream"
    clickstream_help(python, command[1:], cwd=tmp_path)  # the image's own command line
    others = [m for m in FIRST_PARTY if m not in {"gateway", "clickstream_contract"}]
    probe(python, tmp_path, ["gateway.rsgi", "gateway.app"], others)


@pytest.mark.slow
def test_dashboard_archive_runs_the_dashboard_and_holds_no_other_part(
    venvs: dict[str, concurrent.futures.Future[tuple[Path, Path]]], tf: Config, tmp_path: Path
) -> None:
    python, _ = venvs["dashboard"].result()
    installed = check_only_declared(python, ["clickstream-contract", "clickstream-dashboard"])
    assert first_party(installed) == {"clickstream-contract", "clickstream-dashboard"}
    assert commands_of(python) == {"dashboard"}
    venv = startup_installs(tf)["dashboard"].venv
    ran = {unit: args for unit, (where, args) in startup_commands(tf).items() if where == venv}
    assert ran, "the VM runs nothing from the dashboard's venv"
    port = str(tf.resolve("${local.dashboard_port}"))
    for args in ran.values():
        clickstream_help(python, [a.replace("${port}", port) for a in args], cwd=tmp_path)
    others = [m for m in FIRST_PARTY if m not in {"dashboard", "clickstream_contract"}]
    probe(python, tmp_path, ["dashboard.app"], others)


@pytest.mark.slow
def test_operations_archive_runs_every_command_without_the_local_stack(
    venvs: dict[str, concurrent.futures.Future[tuple[Path, Path]]], tf: Config, tmp_path: Path
) -> None:
    python, _ = venvs["operations"].result()
    parts = [distribution_name(part) for part in PARTS]
    installed = check_only_declared(python, ["clickstream", *parts])
    assert first_party(installed) == {"clickstream", *parts}
    assert not installed & {"pgserver", "bqemulator"}, "the local stack is a dev extra"
    everything = {ep.name for ep in importlib.metadata.entry_points(group="clickstream.commands")}
    assert commands_of(python) == everything  # the development install's commands, every one
    venv = startup_installs(tf)["operations"].venv
    ran = {unit: args for unit, (where, args) in startup_commands(tf).items() if where == venv}
    assert set(ran) >= {"clickstream-admin", "clickstream-migrate.service"}
    run([str(python.parent / "clickstream"), "--help"], cwd=tmp_path)
    for args in ran.values():
        if args != ["$@"]:
            clickstream_help(python, args, cwd=tmp_path)
    # What the operator runs through clickstream-admin (terraform/README.md, docs/erasure.md).
    for args in (["db", "prune"], ["erase"], ["audit"], ["dashboard", "hash-password"]):
        clickstream_help(python, args, cwd=tmp_path)
    probe(python, tmp_path, ["clickstream.erase", "clickstream.audit", *PARTS], [])


@pytest.mark.slow
def test_sdk_installs_alone(
    venvs: dict[str, concurrent.futures.Future[tuple[Path, Path]]], tmp_path: Path
) -> None:
    python, _ = venvs["sdk"].result()
    installed = check_only_declared(python, ["clickstream-sdk"])
    assert first_party(installed) == {"clickstream-contract", "clickstream-sdk"}
    heavy = {"granian", "asyncpg", "pgserver", "starlette", "grpcio", "protobuf"}
    assert not installed & heavy and not {n for n in installed if n.startswith("google")}
    others = [m for m in FIRST_PARTY if m not in {"clickstream_sdk", "clickstream_contract"}]
    probe(python, tmp_path, [], others, code="from clickstream_sdk import Client\nassert Client\n")
