"""saas/qianwen and saas/qianwen_vl over DashScope's native REST/SSE protocol, against a local DashScope."""

from __future__ import annotations

import time

import pytest

from byzer_like import AuthenticationError, Client, DeploySpec, UpstreamError
from byzer_like.spec import BackendSpec
from tests.upstreams.dashscope_server import DashScopeUpstream

KEY = "sk-dashscope-test-123456"


@pytest.fixture(scope="module")
def up():
    with DashScopeUpstream(api_key=KEY) as server:
        yield server


def qwen_spec(alias: str, up: DashScopeUpstream, model_type: str = "saas/qianwen", **kwargs) -> DeploySpec:
    engine = {"model": "qwen1.5-32b-chat", "api_key": KEY, "base_url": up.url, "retry_base_s": 0.05, **kwargs}
    return DeploySpec(alias=alias, backend=BackendSpec(model_type=model_type, engine_kwargs=engine))


def test_chat_stream_embed_vl_and_faults(deployed, up):
    deployed(qwen_spec("qw_chat", up))
    client = Client("qw_chat")
    answer = client.chat("hello qwen", top_k=5, repetition_penalty=1.1)
    assert answer.text == "echo: hello qwen" and answer.usage.completion_tokens == 3
    params = up.received[-1].body["parameters"]
    assert params["incremental_output"] and params["top_k"] == 5 and params["repetition_penalty"] == 1.1
    assert up.received[-1].headers["X-DashScope-SSE"] == "enable"
    assert [c.text for c in client.stream("a b") if c.text] == ["echo:", " a", " b"]
    up.add_fault(status=429, headers={"Retry-After": "0.1"})
    start = time.monotonic()
    assert client.chat("again").text == "echo: again"
    elapsed = time.monotonic() - start
    assert [row.status for row in up.received[-2:]] == [429, None]
    # Retry-After was honoured: the retry came no sooner than 0.1 s after the 429 (our first backoff is <= 0.05 s)
    assert up.retry_gap(429) >= 0.1 * 0.9
    assert elapsed >= 0.1 * 0.9
    up.add_fault(cut_after=1)
    with pytest.raises(UpstreamError, match="incomplete"):
        client.chat("a b c")
    deployed(qwen_spec("qw_embed", up, model="text-embedding-v2"))
    assert Client("qw_embed").embed(["a b", "c"]) == [[3.0, 1.0, 0.5], [1.0, 0.0, 0.5]]
    deployed(qwen_spec("qw_vl", up, model_type="saas/qianwen_vl", model="qwen-vl-max"))
    vl = Client("qw_vl").chat([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://img/cat.png"}}, {"type": "text", "text": "what"}]}])
    assert vl.text == "echo: what [1 image(s)]"
    assert up.received[-1].path.endswith("multimodal-generation/generation")
    deployed(qwen_spec("qw_401", up, api_key="sk-wrong-qwen-000"))
    with pytest.raises(AuthenticationError, match="Invalid API-key provided"):
        Client("qw_401").chat("hi")
