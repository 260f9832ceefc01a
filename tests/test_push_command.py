"""`clickstream up --processor push --instances N` and `clickstream function`: the commands they
run, from the command line as a user types it."""

from __future__ import annotations

import pytest
import terraform_config

from clickstream.push import CONCURRENCY, ENTRY_POINT, FUNCTION_SOURCE, function_command
from clickstream.stack import Options, processor_args, push_endpoint
from clickstream_contract.cli import build_parser


def options_of(argv: list[str]) -> Options:
    args = build_parser().parse_args(["up", *argv])
    return Options(**{k: v for k, v in vars(args).items() if k in Options.__dataclass_fields__})


def test_up_runs_the_pull_worker_unless_told_to_push() -> None:
    pulled = options_of([])
    assert processor_args(pulled) == ["processor"]
    assert push_endpoint(pulled) is None

    pushed = options_of(["--processor", "push", "--instances", "3", "--function-port", "9001"])
    assert processor_args(pushed) == [
        "function", "--host", "127.0.0.1", "--port", "9001", "--instances", "3",
    ]  # fmt: skip
    assert push_endpoint(pushed) == "http://127.0.0.1:9001"
    assert options_of(["--processor", "push"]).instances == 2


def test_the_function_command_is_the_deployed_entry_point_with_n_workers() -> None:
    args = build_parser().parse_args(["function", "--instances", "4", "--port", "9002"])
    argv, sizes = function_command(args.host, args.port, args.instances, args.concurrency)
    assert argv[argv.index("--source") + 1] == str(FUNCTION_SOURCE)
    assert FUNCTION_SOURCE.is_file()
    assert argv[argv.index("--target") + 1] == ENTRY_POINT
    assert argv[argv.index("--port") + 1] == "9002"
    assert sizes == {"WORKERS": "4", "THREADS": str(CONCURRENCY)}


@pytest.mark.parametrize("command", [["function"], ["up", "--processor", "push"]])
def test_zero_instances_is_refused_naming_the_rule(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--instances", "0"])
    assert "--instances: must be at least 1, not 0" in capsys.readouterr().err


def test_instances_are_sized_as_terraform_deploys_them() -> None:
    tf = terraform_config.load()
    assert tf.variables["processor_concurrency"]["default"] == CONCURRENCY
    function = tf.resources[("google_cloudfunctions2_function", "processor")]
    [build] = function["build_config"]
    assert build["entry_point"] == ENTRY_POINT
