"""saas/openai through the real ``openai`` SDK inside real worker actors, against a local OpenAI-protocol server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from byzer_like import AuthenticationError, Client, DeploySpec, RequestTimeoutError, UnsupportedError, UpstreamError
from byzer_like._ray import named_actors
from byzer_like.spec import BackendSpec, ResourceSpec
from tests.upstreams.openai_server import OpenAIUpstream

KEY = "sk-test-secret-123456"


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture()
def up(upstream):
    upstream.faults.clear()
    upstream.received.clear()
    return upstream


def openai_spec(alias: str, up: OpenAIUpstream, workers: int = 1, **kwargs) -> DeploySpec:
    engine = {"model": "gpt-4o", "api_key": KEY, "base_url": up.url + "/v1", "retry_base_s": 0.05, **kwargs}
    return DeploySpec(alias=alias, backend=BackendSpec(model_type="saas/openai", engine_kwargs=engine),
                      resources=ResourceSpec(num_workers=workers))


def test_chat_stream_usage_and_params(deployed, up):
    deployed(openai_spec("oa_chat", up))
    client = Client("oa_chat")
    answer = client.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                         max_tokens=2, temperature=0.2, stop=["zz"], seed=7)
    assert answer.text == "echo: hello"
    assert answer.finish_reason == "length"
    assert answer.usage.completion_tokens == 2 and answer.usage.prompt_tokens == 4
    body = up.received[-1].body
    assert body["max_tokens"] == 2 and body["temperature"] == 0.2 and body["stop"] == ["zz"] and body["seed"] == 7
    assert body["stream"] is False and "stream_options" not in body  # a unary answer is asked for in one piece
    chunks = list(client.stream("one two three"))
    assert up.received[-1].body["stream"] is True
    assert up.received[-1].body["stream_options"] == {"include_usage": True}
    assert "".join(c.text for c in chunks) == "echo: one two three"
    assert len([c for c in chunks if c.text]) == 4
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 4
    stat = client.stat()
    assert sum(stat["total_requests"]) == 2 and KEY not in json.dumps(stat)


def test_reasoning_kept_apart_and_images_pass_through(deployed, up):
    deployed(openai_spec("oa_reasoner", up, model="deepseek-reasoner"))
    answer = Client("oa_reasoner").chat([{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert answer.reasoning == "thinking..."
    assert answer.text == "echo: what is this [1 image(s)]"
    assert up.received[-1].body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_embeddings(deployed, up):
    deployed(openai_spec("oa_embed", up, model="text-embedding-3-small"))
    vectors = Client("oa_embed").embed(["a b", "hello"])
    assert vectors == [[3.0, 1.0, 1.0, 1.0], [5.0, 2.0, 0.0, 1.0]]
    assert up.received[-1].body["model"] == "text-embedding-3-small"


def test_unsupported_param_is_named(deployed, up):
    deployed(openai_spec("oa_params", up))
    with pytest.raises(UnsupportedError) as info:
        Client("oa_params").chat("hi", top_k=5)
    assert info.value.param == "top_k" and "top_k" in info.value.message
    assert not up.received  # refused before any upstream call


def test_429_with_retry_after_then_success(deployed, up):
    deployed(openai_spec("oa_429", up))
    up.add_fault(status=429, headers={"Retry-After": "0.3"})
    up.add_fault(status=503)
    start = time.monotonic()
    answer = Client("oa_429").chat("still there")
    elapsed = time.monotonic() - start
    assert answer.text == "echo: still there"
    assert [row.status for row in up.received] == [429, 503, None]  # retried past both, then answered
    # Retry-After was honoured: the retry came no sooner than 0.3 s after the 429 (our own backoff is <= 0.05 s)
    assert up.retry_gap(429) >= 0.3 * 0.9
    assert elapsed >= 0.3 * 0.9


def test_401_is_a_clear_authentication_error(deployed, up):
    deployed(openai_spec("oa_401", up, api_key="sk-wrong-key-987654"))
    with pytest.raises(AuthenticationError) as info:
        Client("oa_401").chat("hi")
    err = info.value
    assert err.upstream_status == 401 and "Incorrect API key provided" in err.message
    assert "sk-wrong-key-987654" not in err.message
    assert len(up.received) == 1  # 4xx is not retried


def test_stream_cut_midway_is_an_error(deployed, up):
    deployed(openai_spec("oa_cut", up))
    up.add_fault(cut_after=2)
    got = []
    with pytest.raises(UpstreamError) as info:
        for chunk in Client("oa_cut").stream("a b c d e f"):
            got.append(chunk.text)
    assert "incomplete" in info.value.message
    assert got == ["echo:", " a"]
    up.add_fault(cut_after=1)
    before = len(up.received)
    # unary: asked in one piece, a body cut half-way reached nobody yet, so it is retried: whole, never short
    assert Client("oa_cut").chat("a b c d e f").text == "echo: a b c d e f"
    assert len(up.received) - before == 2


def test_slow_upstream_is_a_timeout(deployed, up):
    deployed(openai_spec("oa_slow", up, timeout=0.5, max_retries=1))
    up.add_fault(delay_s=2)
    up.add_fault(delay_s=2)
    with pytest.raises(RequestTimeoutError) as info:
        Client("oa_slow").chat("hi")
    assert "saas.timeout" in info.value.message


def test_seed_command_line_and_secrets_never_show(cli, up, tmp_path: Path, ray_cluster):
    """The seed's SiliconFlow line as written (base URL pointed here); the key shows nowhere."""
    deploy = cli("deploy", "--pretrained_model_type", "saas/openai", "--cpus_per_worker", "0.001",
                 "--gpus_per_worker", "0", "--num_workers", "1", "--worker_concurrency", "1000",
                 "--infer_params", f"saas.base_url={up.url}/v1", f"saas.api_key={KEY}",
                 "saas.model=deepseek-ai/deepseek-v2-chat", "--model", "deepseek_chat")
    assert deploy.returncode == 0, deploy.stderr
    outputs = [deploy.stdout + deploy.stderr]
    try:
        chat = cli("query", "--model", "deepseek_chat", "--query", "hi there")
        assert chat.returncode == 0, chat.stderr
        assert "echo: hi there" in chat.stdout
        for args in (("list", "--json"), ("stat", "deepseek_chat", "--json"), ("list",)):
            result = cli(*args)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
        assert up.received[-1].body["model"] == "deepseek-ai/deepseek-v2-chat"
        import ray

        from byzer_like._ray import get_actor

        spec = ray.get(get_actor("deepseek_chat").get_spec.remote())
        outputs += [repr(spec), spec.model_dump_json(), str(spec)]
        assert spec.worker_concurrency == 1000
    finally:
        cli("undeploy", "deepseek_chat", "--force")
    for text in outputs:
        assert KEY not in text
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    for log in logs.rglob("*"):
        if log.is_file() and log.stat().st_size < 50_000_000:
            assert KEY.encode() not in log.read_bytes(), log


def test_preset_with_token_env_and_token_file(cli, up, tmp_path: Path):
    env = {"MY_DEEPSEEK_KEY": KEY}
    result = cli("deploy", "deepseek-chat", "--token-env", "MY_DEEPSEEK_KEY", "--alias", "ds_env",
                 "--base_url", up.url + "/v1", env=env)
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    result2 = cli("deploy", "deepseek-chat", "--token-file", str(key_file), "--alias", "ds_file",
                  "--base_url", up.url + "/v1")
    try:
        assert result2.returncode == 0, result2.stderr
        for alias in ("ds_env", "ds_file"):
            assert Client(alias).chat("hey").text == "echo: hey"
        assert up.received[-1].body["model"] == "deepseek-chat"
        assert KEY not in result.stdout + result.stderr + result2.stdout + result2.stderr
        bad = cli("deploy", "deepseek-chat", "--token-file", str(tmp_path / "missing"), "--alias", "ds_bad",
                  "--base_url", up.url + "/v1")
        assert bad.returncode != 0 and "missing" in bad.stderr
    finally:
        for alias in ("ds_env", "ds_file", "ds_bad"):
            cli("undeploy", alias, "--force")


def test_bad_option_names_the_param(cli, up):
    result = cli("deploy", "--pretrained_model_type", "saas/openai", "--model", "oa_bad",
                 "--infer_params", "saas.model=gpt-4o", "saas.temprature=1", f"saas.api_key={KEY}")
    assert result.returncode == 2, result.stdout + result.stderr  # a usage error, not a crash or a load failure
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(err.splitlines()) == 1, result.stderr
    assert err.startswith("Error: infer_params 'temprature' is not an option of the saas/openai backend")
    assert "its options:" in err and "base_url" in err and "model" in err  # says what would have been accepted
    assert KEY not in result.stderr + result.stdout
    # nothing was deployed, and the upstream never heard of it
    assert not [name for name in named_actors() if name.startswith("oa_bad")]
    listed = cli("list", "--json")
    assert listed.returncode == 0 and "oa_bad" not in [row["alias"] for row in json.loads(listed.stdout)]
    assert up.received == []


def test_azure_openai_seed_command_line(cli, up):
    result = cli("deploy", "--pretrained_model_type", "saas/azure_openai", "--cpus_per_worker", "0.001",
                 "--gpus_per_worker", "0", "--num_workers", "1", "--worker_concurrency", "10",
                 "--infer_params", 'saas.api_type="azure"', f'saas.azure_endpoint="{up.url}/"', f'saas.api_key="{KEY}"',
                 'saas.api_version="2024-02-15-preview"', 'saas.azure_deployment="gpt-4o-2024-05-13"',
                 "saas.model=gpt-4o", "--model", "azure_gpt4o")
    try:
        assert result.returncode == 0, result.stderr
        assert Client("azure_gpt4o").chat("hi azure").text == "echo: hi azure"
        got = up.received[-1]
        assert got.path == "/openai/deployments/gpt-4o-2024-05-13/chat/completions"
        assert got.headers.get("api-key") == KEY
    finally:
        cli("undeploy", "azure_gpt4o", "--force")


def test_adapters_are_upstream_models(cli, up, ray_cluster):
    """``saas.adapters.NAME=MODEL`` at deploy and ``adapters add`` later: each names a (fine-tuned) upstream model."""
    deploy = cli("deploy", "--pretrained_model_type", "saas/openai", "--model", "oa_ft",
                 "--infer_params", f"saas.base_url={up.url}/v1", f"saas.api_key={KEY}", "saas.model=gpt-4o-mini",
                 "saas.adapters.support=ft:gpt-4o-mini:acme:support:abc123")
    assert deploy.returncode == 0, deploy.stderr
    try:
        client = Client("oa_ft")
        assert client.chat("hi").text == "echo: hi" and up.received[-1].body["model"] == "gpt-4o-mini"
        client.chat("hi", adapter="support")
        assert up.received[-1].body["model"] == "ft:gpt-4o-mini:acme:support:abc123"
        client.add_adapter("legal", "ft:gpt-4o-mini:acme:legal:xyz")
        "".join(c.text for c in client.stream("yo", adapter="legal"))
        assert up.received[-1].body["model"] == "ft:gpt-4o-mini:acme:legal:xyz"
        assert "adapter" not in up.received[-1].body
        assert [a["name"] for a in client.adapters()] == ["support", "legal"]
    finally:
        cli("undeploy", "oa_ft", "--force")
