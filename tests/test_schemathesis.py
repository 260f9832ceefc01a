"""schemathesis against the gateway's own `/openapi.json`, served by Granian: generated requests
for every operation (valid and invalid per the schema) never get a 5xx.

Short in CI; `CLICKSTREAM_FUZZ_EXAMPLES=N` sets the examples per operation (see
tests/test_bad_input.py for the long-run command).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from gateway_server import GatewayProcess, running_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")
EXAMPLES = int(os.environ.get("CLICKSTREAM_FUZZ_EXAMPLES", "25"))
CALLS: dict[str, int] = {}


@pytest.fixture(scope="module")
def gateway(
    pubsub_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = {"CLICKSTREAM_GATEWAY_AUTH_MAX_FAILURES": "1000000000"}  # bad keys are generated
    project = f"test-st-{uuid.uuid4().hex[:8]}"
    with running_gateway(
        pubsub_emulator_host, project, tmp_path_factory.mktemp("schemathesis"), env
    ) as gw:
        yield gw
    print(f"schemathesis calls per operation: {CALLS} (total {sum(CALLS.values())})")


@pytest.fixture(scope="module")
def operations(gateway: GatewayProcess) -> dict[str, Any]:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    results: list[Any] = list(schema.get_all_operations())  # Ok | Err: a bad schema raises
    return {result.ok().label: result.ok() for result in results}


def fuzz(key: str, strategy: Any) -> Any:
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        CALLS[key] = CALLS.get(key, 0) + 1
        case.call_and_validate(
            headers={"authorization": "Bearer test-key"}, checks=[not_a_server_error]
        )

    return run


# The pytest plugin of schemathesis 4.32 does not run under pytest 9 (it reads a removed
# `_nodeid`), so each operation's strategy is driven by hypothesis directly.
@pytest.mark.timeout(max(300, EXAMPLES // 10))  # long runs: see the docstring
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_gateway_conforms_and_never_fails(
    operations: dict[str, Any], gateway: GatewayProcess, mode: GenerationMode
) -> None:
    assert {"POST /v1/events", "POST /v1/batch"} <= set(operations)
    for label, operation in operations.items():
        run = fuzz(f"{label} ({mode.value})", operation.as_strategy(generation_mode=mode))
        try:
            run()
        except Unsatisfiable:
            # An operation without parameters or body (GET /healthz) has nothing to negate.
            assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", label
    assert "unexpected error" not in gateway.log()
