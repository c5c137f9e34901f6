"""Tools and response formats through the SaaS proxies (real SDKs in real workers) against local upstreams that
speak OpenAI's, Anthropic's and Bedrock's wire protocols: tool definitions go out in the provider's shape, the
provider's tool calls come back (unary and streamed: id and name first, then argument pieces) and tool results go
out again, all intact.
"""

from __future__ import annotations

import json

import pytest

from byzer_like import Client, DeploySpec, UnsupportedError
from byzer_like.spec import BackendSpec
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.bedrock_server import BedrockUpstream
from tests.upstreams.openai_server import OpenAIUpstream
from tests.upstreams.server import tool_arguments

KEY, ACCESS, SECRET = "sk-test-secret-123456", "AKIATESTACCESS0001", "aws-secret-test-key-abcdef"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
QUESTION = "weather in Paris"
FORCED = {"type": "function", "function": {"name": "get_weather"}}


def _spec(kind: str, url: str) -> DeploySpec:
    engines = {
        "saas/openai": {"model": "gpt-4o", "api_key": KEY, "base_url": url + "/v1"},
        "saas/claude": {"model": "claude-3-5-sonnet-20240620", "api_key": KEY, "base_url": url},
        "saas/aws_bedrock": {"model": "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws_access_key": ACCESS,
                             "aws_secret_key": SECRET, "region_name": "us-east-1", "base_url": url}}
    return DeploySpec(alias=f"tools_{kind.split('/')[1]}",
                      backend=BackendSpec(model_type=kind, engine_kwargs={**engines[kind], "retry_base_s": 0.05}))


PROVIDERS = {"saas/openai": (OpenAIUpstream, KEY), "saas/claude": (AnthropicUpstream, KEY),
             "saas/aws_bedrock": (BedrockUpstream, ACCESS)}


@pytest.fixture(scope="module", params=sorted(PROVIDERS))
def provider(request, ray_cluster):
    from byzer_like.pool import deploy, undeploy

    server_cls, key = PROVIDERS[request.param]
    with server_cls(api_key=key) as server:
        spec = _spec(request.param, server.url)
        deploy(spec, replace=True)
        yield request.param, spec.alias, server
        undeploy(spec.alias, force=True)


def _sent_tools(kind: str, body: dict) -> list[dict]:
    """The tool definitions the upstream received, back in OpenAI's shape."""
    if kind == "saas/openai":
        return body["tools"]
    if kind == "saas/claude":
        return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in body["tools"]]
    return [{"type": "function", "function": {"name": s["name"], "description": s["description"],
                                              "parameters": s["inputSchema"]["json"]}}
            for s in (t["toolSpec"] for t in body["toolConfig"]["tools"])]


def _sent_choice(kind: str, body: dict) -> object:
    return {"saas/openai": lambda: body["tool_choice"], "saas/claude": lambda: body["tool_choice"],
            "saas/aws_bedrock": lambda: body["toolConfig"]["toolChoice"]}[kind]()


EXPECTED_CHOICE = {"saas/openai": FORCED, "saas/claude": {"type": "tool", "name": "get_weather"},
                   "saas/aws_bedrock": {"tool": {"name": "get_weather"}}}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_definitions_out_tool_calls_back_intact(provider, stream):
    kind, alias, up = provider
    client = Client(alias, timeout=60)
    up.received.clear()
    kwargs = {"tools": [WEATHER, TIME], "tool_choice": FORCED}
    if stream:
        chunks = list(client.stream(QUESTION, **kwargs))
        pieces = [d for c in chunks for d in c.tool_calls or []]
        assert pieces[0].name == "get_weather" and pieces[0].id  # id and name first ...
        assert len([p for p in pieces if p.arguments]) >= 2  # ... then the arguments in pieces, as streamed
        assert chunks[-1].finish_reason == "tool_calls"
        arguments = "".join(p.arguments for p in pieces)
        call_id, finish = pieces[0].id, chunks[-1].finish_reason
    else:
        answer = client.chat(QUESTION, **kwargs)
        assert answer.text == "" and len(answer.tool_calls) == 1
        call = answer.tool_calls[0]
        assert call.function.name == "get_weather"
        arguments, call_id, finish = call.function.arguments, call.id, answer.finish_reason
    assert finish == "tool_calls"
    assert json.loads(arguments) == json.loads(tool_arguments("get_weather", QUESTION))
    assert call_id in ("call_up_1", "toolu_up_1", "tooluse_up_1")  # the provider's own id, kept
    body = up.received[-1].body
    assert _sent_tools(kind, body) == [WEATHER, TIME]
    assert _sent_choice(kind, body) == EXPECTED_CHOICE[kind]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_result_goes_back_intact(provider, stream):
    kind, alias, up = provider
    client = Client(alias, timeout=60)
    first = client.chat(QUESTION, tools=[WEATHER], tool_choice="required")
    call = first.tool_calls[0]
    history = [{"role": "user", "content": QUESTION},
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    up.received.clear()
    if stream:
        text = "".join(c.text for c in client.stream(history, tools=[WEATHER]))
    else:
        answer = client.chat(history, tools=[WEATHER])
        assert answer.tool_calls is None and answer.finish_reason == "stop"
        text = answer.text
    assert text == f"echo: {call.id}: sunny, 21 C"  # the upstream saw the result, tied to the call's id
    messages = up.received[-1].body["messages"]
    arguments = json.loads(call.function.arguments)
    if kind == "saas/openai":
        assert messages[1]["tool_calls"] == [call.model_dump()] and messages[2] == history[2]
    elif kind == "saas/claude":
        assert messages[1]["content"] == [{"type": "tool_use", "id": call.id, "name": "get_weather",
                                           "input": arguments}]
        assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]
    else:
        assert messages[1]["content"] == [{"toolUse": {"toolUseId": call.id, "name": "get_weather",
                                                       "input": arguments}}]
        assert messages[2]["content"] == [{"toolResult": {"toolUseId": call.id, "content": [{"text": "sunny, 21 C"}]}}]


def test_json_schema_format(provider):
    kind, alias, up = provider
    schema = {"type": "object", "properties": {"tool": {"type": "string"}, "echo": {"type": "string"},
                                               "n": {"type": "integer"}}, "required": ["tool", "echo", "n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    answer = Client(alias, timeout=60).chat(QUESTION, response_format=fmt)
    body = up.received[-1].body
    if kind == "saas/openai":  # passed as is; the fake echoes text (a real host would honour the format)
        assert body["response_format"] == fmt and answer.text == f"echo: {QUESTION}"
        return
    # Anthropic and Bedrock: a forced tool whose input is the answer, handed back as the text
    assert answer.tool_calls is None and answer.finish_reason == "stop"
    assert json.loads(answer.text) == json.loads(tool_arguments("json_answer", QUESTION))
    sent = body["tools"][0]["input_schema"] if kind == "saas/claude" else \
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
    assert sent == schema


def test_what_a_provider_cannot_do_is_a_400_naming_it(provider):
    kind, alias, _ = provider
    client = Client(alias, timeout=60)
    if kind == "saas/aws_bedrock":
        with pytest.raises(UnsupportedError) as info:
            client.chat(QUESTION, tools=[WEATHER], tool_choice="none")
        assert info.value.param == "tool_choice"
    if kind != "saas/openai":
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
        with pytest.raises(UnsupportedError) as info:
            client.chat(QUESTION, tools=[WEATHER], response_format=fmt)
        assert info.value.param == "response_format"
