"""saas/claude through the real ``anthropic`` SDK inside real worker actors, against a local Messages API."""

from __future__ import annotations

import pytest

from byzer_like import AuthenticationError, Client, DeploySpec, RequestTimeoutError, UnsupportedError, UpstreamError
from byzer_like.spec import BackendSpec
from tests.upstreams.anthropic_server import AnthropicUpstream

KEY = "sk-ant-test-secret-123456"


@pytest.fixture(scope="module")
def upstream():
    with AnthropicUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture()
def up(upstream):
    upstream.faults.clear()
    upstream.received.clear()
    return upstream


def claude_spec(alias: str, up: AnthropicUpstream, **kwargs) -> DeploySpec:
    engine = {"model": "claude-3-5-sonnet-20240620", "api_key": KEY, "base_url": up.url, "retry_base_s": 0.05,
              **kwargs}
    return DeploySpec(alias=alias, backend=BackendSpec(model_type="saas/claude", engine_kwargs=engine))


def test_chat_system_lifted_images_stream_usage(deployed, up):
    deployed(claude_spec("cl_chat", up))
    client = Client("cl_chat")
    answer = client.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                         temperature=0.5, top_k=3, stop="zz")
    assert answer.text == "echo: hello there" and answer.finish_reason == "stop"
    assert answer.usage.prompt_tokens == 2 and answer.usage.completion_tokens == 3
    body = up.received[-1].body
    assert body["system"] == "be brief" and [m["role"] for m in body["messages"]] == ["user"]
    assert body["top_k"] == 3 and body["stop_sequences"] == ["zz"] and body["max_tokens"] == 4096
    assert up.received[-1].headers.get("anthropic-version")
    chunks = list(client.stream([{"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        max_tokens=2))
    assert "".join(c.text for c in chunks) == "echo: see"
    assert chunks[-1].finish_reason == "length"
    image = up.received[-1].body["messages"][0]["content"][1]
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def test_unsupported_param(deployed, up):
    deployed(claude_spec("cl_params", up))
    with pytest.raises(UnsupportedError) as info:
        Client("cl_params").chat("hi", presence_penalty=0.5)
    assert info.value.param == "presence_penalty"


def test_faults(deployed, up):
    deployed(claude_spec("cl_faults", up, timeout=0.5, max_retries=2))
    client = Client("cl_faults")
    up.add_fault(status=429, headers={"retry-after": "0.2"})
    assert client.chat("again").text == "echo: again"
    up.add_fault(cut_after=1)
    with pytest.raises(UpstreamError, match="incomplete"):
        client.chat("a b c d")
    for _ in range(3):
        up.add_fault(delay_s=1.5)
    with pytest.raises(RequestTimeoutError):
        client.chat("slow")


def test_401(deployed, up):
    deployed(claude_spec("cl_401", up, api_key="sk-ant-wrong-000000"))
    with pytest.raises(AuthenticationError) as info:
        Client("cl_401").chat("hi")
    assert info.value.upstream_status == 401 and "invalid x-api-key" in info.value.message


def test_seed_command_line(cli, up):
    result = cli("deploy", "--pretrained_model_type", "saas/claude", "--cpus_per_worker", "0.001",
                 "--gpus_per_worker", "0", "--num_workers", "1", "--worker_concurrency", "10",
                 "--infer_params", f"saas.api_key={KEY}", "saas.model=claude-3-5-sonnet-20240620",
                 f"saas.base_url={up.url}", "--model", "claude_chat")
    try:
        assert result.returncode == 0, result.stderr
        chat = cli("chat", "claude_chat", "hi claude")
        assert chat.returncode == 0 and "echo: hi claude" in chat.stdout
        assert KEY not in result.stdout + result.stderr + chat.stdout + chat.stderr
    finally:
        cli("undeploy", "claude_chat", "--force")
