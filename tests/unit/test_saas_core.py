"""SaaS building blocks without Ray or network: sealing, retry policy, error mapping by type, presets."""

from __future__ import annotations

import pickle

import httpx
import openai
import pytest

from byzer_like.backends.registry import resolve_spec
from byzer_like.errors import (
    AuthenticationError,
    InvalidRequestError,
    InvalidSpecError,
    RateLimitError,
    RequestTimeoutError,
    UpstreamError,
)
from byzer_like.saas.openai_compat import openai_error_map
from byzer_like.saas.presets import preset_flags
from byzer_like.saas.retry import RetryPolicy
from byzer_like.saas.secrets import redact, seal_secrets
from byzer_like.spec import BackendSpec, DeploySpec

KEY = "sk-unit-secret-abcdef"


def _status(status: int, body: dict, headers: dict | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, json=body, headers=headers, request=request)
    cls = {401: openai.AuthenticationError, 429: openai.RateLimitError, 400: openai.BadRequestError}.get(
        status, openai.InternalServerError)
    return cls("Error code", response=response, body=body)


def test_resolved_spec_hides_the_key_everywhere():
    spec = resolve_spec(DeploySpec(alias="a", backend=BackendSpec(model_type="saas/openai", engine_kwargs={
        "model": "gpt-4o", "api_key": KEY})))
    for text in (repr(spec), str(spec), spec.model_dump_json(), str(spec.model_dump())):
        assert KEY not in text
    assert pickle.loads(pickle.dumps(spec)).backend.engine_kwargs["api_key"].get_secret_value() == KEY
    assert spec.worker_concurrency == 1000


def test_seal_is_idempotent_and_leaves_other_fields():
    once = seal_secrets({"api_key": KEY, "model": "m", "aws_secret_key": "s3cr3t-key"})
    assert seal_secrets(once) == once and once["model"] == "m"


def test_bad_option_value_does_not_echo_a_secret():
    with pytest.raises(InvalidSpecError) as info:
        resolve_spec(DeploySpec(alias="a", backend=BackendSpec(model_type="saas/openai", engine_kwargs={
            "model": "gpt-4o", "api_key": KEY, "timeout": "soon"})))
    assert info.value.param == "timeout" and KEY not in info.value.message


def test_redact():
    assert KEY not in redact(f"bad key {KEY} and {KEY[:10]}...", [KEY])


@pytest.mark.parametrize("status,cls", [(401, AuthenticationError), (429, RateLimitError),
                                        (400, InvalidRequestError), (503, UpstreamError)])
def test_openai_errors_map_by_type_and_pickle(status, cls):
    exc = _status(status, {"error": {"message": f"upstream says {status} for {KEY}", "param": "messages"}},
                  {"retry-after": "2"})
    errors = openai_error_map("openai")
    errors.secrets = [KEY]
    err = errors(exc)
    assert type(err) is cls and err.upstream_status == status and f"upstream says {status}" in err.message
    assert KEY not in err.message
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and back.upstream_status == status and back.message == err.message
    if cls is RateLimitError:
        assert back.retry_after == 2.0


def test_timeouts_and_connection_errors():
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    errors = openai_error_map("openai")
    assert isinstance(errors(openai.APITimeoutError(request=request)), RequestTimeoutError)
    assert type(errors(httpx.RemoteProtocolError("cut"))) is UpstreamError


def test_retry_policy_honours_retry_after_and_budget():
    policy = RetryPolicy(max_retries=3, base_s=0.1, max_s=1, budget_s=5)
    assert policy.delay(0, RateLimitError("x", retry_after=2.0), elapsed=0) == 2.0
    assert policy.delay(0, RateLimitError("x", retry_after=9.0), elapsed=0) is None  # beyond the budget
    assert policy.delay(3, UpstreamError("x", upstream_status=503), elapsed=0) is None  # out of retries
    assert policy.delay(0, AuthenticationError("x", upstream_status=401), elapsed=0) is None  # 4xx: no retry
    assert 0 <= policy.delay(1, UpstreamError("x", upstream_status=502), elapsed=0) <= 0.2


def test_presets_expand_to_saas_flags():
    flags = preset_flags("deepseek-chat", None)
    assert flags["pretrained_model_type"] == "saas/openai" and flags["worker_concurrency"] == 1000
    assert "saas.base_url=https://api.deepseek.com/v1" in flags["infer_params"]
    assert "saas.base_url=http://h/v1" in preset_flags("deepseek-chat", "http://h/v1")["infer_params"]
    with pytest.raises(InvalidSpecError, match="presets"):
        preset_flags("nope", None)
