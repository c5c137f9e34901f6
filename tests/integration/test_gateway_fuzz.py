"""Fuzz the gateway's OpenAPI schema with schemathesis (bounded): malformed input must never produce a 5xx.

The app runs in-process against a real echo alias; the generated requests (valid and invalid bodies, odd
paths and query strings) go through the real routes, the real AsyncClient and the router actor.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from byzer_like import DeploySpec
from byzer_like.gateway import GatewaySettings, build_app
from byzer_like.spec import BackendSpec

MAX_EXAMPLES = 25  # per operation: keeps the whole run to about a minute on 2 cores


@pytest.fixture(scope="module")
def gateway_schema(ray_cluster):
    from byzer_like.pool import deploy, undeploy

    deploy(DeploySpec(alias="fuzz_echo", backend=BackendSpec(model_type="custom/echo")), replace=True)
    yield schemathesis.openapi.from_asgi("/openapi.json", build_app(GatewaySettings()))
    undeploy("fuzz_echo", force=True)


def _check(case) -> None:
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "fuzz_echo"  # reach the backend, not only the 404 path
    if case.path_parameters and "alias" in case.path_parameters:
        case.path_parameters["alias"] = "fuzz_echo"
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


def test_no_5xx_on_any_generated_request(gateway_schema):
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                _check(case)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /health has no parameters)
                assert mode is GenerationMode.NEGATIVE
