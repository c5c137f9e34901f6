"""The gateway in front of a SaaS alias: the real ``openai`` SDK -> ``byzer-like serve`` -> router -> saas/openai
worker (real ``openai`` SDK inside) -> a local server speaking OpenAI's protocol. Nothing of ours is faked."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from byzer_like import DeploySpec
from byzer_like.spec import BackendSpec, ResourceSpec
from conftest import free_port, run_cli
from tests.upstreams.openai_server import OpenAIUpstream

UPSTREAM_KEY = "sk-upstream-secret-98765"
GATEWAY_KEY = "gw-saas-key"


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(ray_cluster, upstream):
    from byzer_like.pool import deploy, list_aliases, undeploy

    spec = DeploySpec(alias="gw_saas", backend=BackendSpec(model_type="saas/openai", engine_kwargs={
        "model": "gpt-4o", "api_key": UPSTREAM_KEY, "base_url": upstream.url + "/v1", "retry_base_s": 0.05}),
        resources=ResourceSpec(num_workers=2))
    deploy(spec, replace=True)
    port = free_port()
    started = run_cli("serve", "--port", str(port), "--api-key-env", "GW_SAAS_KEYS", env={"GW_SAAS_KEYS": GATEWAY_KEY})
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url
    run_cli("serve", "--stop")
    if "gw_saas" in list_aliases():
        undeploy("gw_saas", force=True)


@pytest.fixture()
def oai(gateway, upstream):
    upstream.faults.clear()
    upstream.received.clear()
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=GATEWAY_KEY, max_retries=0)


def test_chat_through_gateway_reaches_the_upstream(oai, upstream):
    resp = oai.chat.completions.create(model="gw_saas", messages=[{"role": "user", "content": "hello world"}],
                                       temperature=0.3, max_tokens=8)
    assert resp.choices[0].message.content == "echo: hello world"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 3
    sent = upstream.received[-1]
    assert sent.body["temperature"] == 0.3 and sent.body["max_tokens"] == 8 and sent.body["model"] == "gpt-4o"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"  # the gateway key never goes upstream


def test_stream_with_usage_through_gateway(oai):
    stream = oai.chat.completions.create(model="gw_saas", messages=[{"role": "user", "content": "one two three"}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_embeddings_through_gateway(oai):
    resp = oai.embeddings.create(model="gw_saas", input=["a b", "hello"])
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) > 0


def test_upstream_429_is_retried_and_the_caller_gets_the_answer(oai, upstream):
    upstream.add_fault(status=429, headers={"Retry-After": "0.2"})
    start = time.monotonic()
    resp = oai.chat.completions.create(model="gw_saas", messages=[{"role": "user", "content": "again"}])
    elapsed = time.monotonic() - start
    assert resp.choices[0].message.content == "echo: again"
    assert [row.status for row in upstream.received] == [429, None]
    # Retry-After was honoured: the retry came no sooner than 0.2 s after the 429 (our own backoff is <= 0.05 s)
    assert upstream.retry_gap(429) >= 0.2 * 0.9
    assert elapsed >= 0.2 * 0.9


def test_upstream_failure_is_a_clean_openai_error(oai, upstream):
    for _ in range(8):  # more 500s than the retry budget
        upstream.add_fault(status=500)
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model="gw_saas", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "upstream" in info.value.message.lower() and UPSTREAM_KEY not in info.value.message
    upstream.faults.clear()
