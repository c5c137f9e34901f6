"""saas/aws_bedrock through real ``boto3`` inside real worker actors, against a local Converse/event-stream server."""

from __future__ import annotations

import json

import boto3
import pytest

from byzer_like import AuthenticationError, Client, DeploySpec, RequestTimeoutError, UnsupportedError, UpstreamError
from byzer_like.spec import BackendSpec
from tests.upstreams.bedrock_server import BedrockUpstream

ACCESS, SECRET = "AKIATESTACCESS0001", "aws-secret-test-key-abcdef"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture(scope="module")
def upstream():
    with BedrockUpstream(api_key=ACCESS) as server:
        yield server


@pytest.fixture()
def up(upstream):
    upstream.faults.clear()
    upstream.received.clear()
    return upstream


def bedrock_spec(alias: str, up: BedrockUpstream, **kwargs) -> DeploySpec:
    engine = {"model": MODEL, "aws_access_key": ACCESS, "aws_secret_key": SECRET, "region_name": "us-east-1",
              "base_url": up.url, "retry_base_s": 0.05, **kwargs}
    return DeploySpec(alias=alias, backend=BackendSpec(model_type="saas/aws_bedrock", engine_kwargs=engine))


def test_converse_json_from_the_fake_speaks_boto3(up):
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=up.url,
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    out = client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert out["output"]["message"]["content"][0]["text"] == "echo: hi" and out["usage"]["outputTokens"] == 2


def test_chat_stream_system_usage(deployed, up):
    deployed(bedrock_spec("br_chat", up))
    client = Client("br_chat")
    answer = client.chat([{"role": "system", "content": "brief"}, {"role": "user", "content": "hello bedrock"}],
                         max_tokens=2, temperature=0.1)
    assert answer.text == "echo: hello" and answer.finish_reason == "length"
    assert answer.usage.prompt_tokens == 2 and answer.usage.completion_tokens == 2
    body = up.received[-1].body
    assert body["system"] == [{"text": "brief"}]
    assert body["inferenceConfig"] == {"maxTokens": 2, "temperature": 0.1}
    chunks = list(client.stream("a b c"))
    assert [c.text for c in chunks if c.text] == ["echo:", " a", " b", " c"]
    assert chunks[-1].finish_reason == "stop"
    with pytest.raises(UnsupportedError, match="top_k"):
        client.chat("x", top_k=2)
    assert SECRET not in json.dumps(client.stat())


def test_faults(deployed, up):
    deployed(bedrock_spec("br_faults", up, timeout=0.5, max_retries=2))
    client = Client("br_faults")
    up.add_fault(status=429)
    assert client.chat("again").text == "echo: again"
    up.add_fault(cut_after=1)
    with pytest.raises(UpstreamError, match="incomplete"):
        client.chat("a b c")
    for _ in range(3):
        up.add_fault(delay_s=1.5)
    with pytest.raises(RequestTimeoutError):
        client.chat("slow")


def test_bad_key_and_seed_command_line(deployed, cli, up):
    deployed(bedrock_spec("br_401", up, aws_access_key="AKIAWRONG00000000"))
    with pytest.raises(AuthenticationError) as info:
        Client("br_401").chat("hi")
    assert "security token included in the request is invalid" in info.value.message
    result = cli("deploy", "--pretrained_model_type", "saas/aws_bedrock", "--cpus_per_worker", "0.001",
                 "--gpus_per_worker", "0", "--worker_concurrency", "10", "--num_workers", "1", "--infer_params",
                 f"saas.aws_access_key={ACCESS}", f"saas.aws_secret_key={SECRET}", "saas.region_name=us-east-1",
                 f"saas.model={MODEL}", f"saas.base_url={up.url}", "--model", "sonnet_3_5_chat")
    try:
        assert result.returncode == 0, result.stderr
        chat = cli("query", "--model", "sonnet_3_5_chat", "--query", "hi aws")
        assert chat.returncode == 0 and "echo: hi aws" in chat.stdout
        shown = cli("list", "--json").stdout + cli("stat", "sonnet_3_5_chat", "--json").stdout
        assert SECRET not in shown + result.stdout + result.stderr and ACCESS not in shown
    finally:
        cli("undeploy", "sonnet_3_5_chat", "--force")
