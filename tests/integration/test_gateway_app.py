"""The gateway app in-process (httpx ASGITransport) against real aliases on the session Ray cluster.

Covers the error mapping, the OpenAI shapes and SSE framing, the seed's extended fields, TGI and simple routes,
and auth. The gateway over a real Ray Serve HTTP proxy with the real SDKs is in ``tests/e2e/``.
"""

from __future__ import annotations

import json

import httpx
import pytest

from byzer_like import DeploySpec
from byzer_like.gateway import GatewaySettings, KeyTable, build_app
from byzer_like.spec import BackendSpec, QueueSpec, ResourceSpec

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def echo_aliases(ray_cluster):
    from byzer_like.pool import deploy, undeploy

    specs = [
        DeploySpec(alias="gw_echo", backend=BackendSpec(model_type="custom/echo",
                                                         engine_kwargs={"fail_marker": "BOOM"})),
        DeploySpec(alias="gw_tiny", backend=BackendSpec(model_type="custom/echo",
                                                         engine_kwargs={"token_delay_s": 0.5}),
                   resources=ResourceSpec(worker_concurrency=1), queue=QueueSpec(max_queue=0)),
    ]
    for spec in specs:
        deploy(spec, replace=True)
    yield [s.alias for s in specs]
    for spec in specs:
        undeploy(spec.alias, force=True)


def _client(keys: KeyTable | None = None) -> httpx.AsyncClient:
    app = build_app(GatewaySettings(), keys=keys)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://gw")


def _sse(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]


def _assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param
    return err


CHAT = {"model": "gw_echo", "messages": [{"role": "user", "content": "one two three"}]}


async def test_chat_completion_non_stream(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json=CHAT)
    body = resp.json()
    assert resp.status_code == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "one two three"}
    assert body["usage"]["completion_tokens"] == 3
    assert resp.headers["x-request-id"]


async def test_chat_stream_ends_with_one_done_and_usage(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    events = _sse(resp.text)
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == "one two three"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_no_hidden_max_tokens_default(echo_aliases):
    words = " ".join(f"w{i}" for i in range(40))
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": words}]})
    assert resp.json()["choices"][0]["message"]["content"] == words  # 40 words > byzerllm's hidden 16


async def test_n_fans_out_non_streamed(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, "n": 3})
        streamed = await c.post("/v1/chat/completions", json={**CHAT, "n": 2, "stream": True})
    assert [ch["index"] for ch in resp.json()["choices"]] == [0, 1, 2]
    _assert_error(streamed, 400, "n")


async def test_completion_echo_and_max_tokens(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/completions", json={"model": "gw_echo", "prompt": "a b c d", "max_tokens": 2,
                                                      "echo": True})
    choice = resp.json()["choices"][0]
    assert choice["text"] == "a b c da b" and choice["finish_reason"] == "length"


async def test_seed_extended_request_neutral_values_accepted(echo_aliases, deployed):
    # an echo alias that answers with the sampling parameters its engine received (the request as the worker saw it)
    deployed(DeploySpec(alias="gw_params", backend=BackendSpec(model_type="custom/echo",
                                                               engine_kwargs={"echo_params": True})))
    seed = {**CHAT, "n": 1, "best_of": 1, "ignore_eos": False, "use_beam_search": False, "skip_special_tokens": True,
            "spaces_between_special_tokens": True, "add_generation_prompt": True, "echo": False,
            "include_stop_str_in_output": False, "length_penalty": 1.0, "logit_bias": {}, "user": "user123",
            "conversation_id": 42, "top_k": 50, "temperature": 0.9, "top_p": 0.95, "max_tokens": 64}
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json=seed)
        seen = await c.post("/v1/chat/completions", json={**seed, "model": "gw_params"})
        streamed = await c.post("/v1/chat/completions", json={**seed, "model": "gw_params", "stream": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "one two three"  # the answer is the usual one
    # the sampling fields reach the engine unchanged; the neutral ones ask for nothing, so none of them arrives
    # (ignore_eos=False is not forwarded as a setting, user/conversation_id stay in the gateway)
    expected = {"max_tokens": 64, "temperature": 0.9, "top_k": 50, "top_p": 0.95}
    assert seen.status_code == 200, seen.text
    assert json.loads(seen.json()["choices"][0]["message"]["content"]) == expected
    assert streamed.status_code == 200, streamed.text
    events = [json.loads(e) for e in _sse(streamed.text) if e != "[DONE]"]
    assert json.loads("".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])) \
        == expected


@pytest.mark.parametrize("field,value", [("min_p", 0.05), ("repetition_penalty", 1.1), ("use_beam_search", True),
                                         ("logit_bias", {"greeting": -1.0}), ("white_list_token", ["hi"]),
                                         ("length_penalty", 1.2), ("force_prompt", "Always greet"),
                                         ("enable_repeat_stopper", True), ("presence_penalty", 0.1)])
async def test_seed_field_the_backend_cannot_honour_is_a_400_naming_it(echo_aliases, field, value):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, field: value})
        streamed = await c.post("/v1/chat/completions", json={**CHAT, field: value, "stream": True})
    assert field in _assert_error(resp, 400, field)["message"]
    _assert_error(streamed, 400, field)


@pytest.mark.parametrize("body", [
    {"model": "gw_echo"},
    {"model": "gw_echo", "messages": []},
    {"model": "gw_echo", "messages": [{"role": "wizard", "content": "x"}]},
    {"model": "gw_echo", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
    {"model": "gw_echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
    {"model": "gw_echo", "messages": [{"role": "user", "content": "x"}], "bogus": 1},
    [1, 2, 3],
])
async def test_malformed_chat_is_400_not_500(echo_aliases, body):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json=body)
    _assert_error(resp, 400)


async def test_invalid_json_is_400(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    _assert_error(resp, 400)


async def test_unknown_model_is_404(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, "model": "no_such_alias"})
        tgi = await c.post("/no_such_alias/generate", json={"inputs": "x"})
    _assert_error(resp, 404, "model")
    _assert_error(tgi, 404)


async def test_overloaded_is_429_with_retry_after(echo_aliases):
    import asyncio

    busy = {"model": "gw_tiny", "messages": [{"role": "user", "content": "a b c"}]}
    async with _client() as c:
        first = asyncio.create_task(c.post("/v1/chat/completions", json=busy))
        await asyncio.sleep(0.3)
        second = await c.post("/v1/chat/completions", json=busy)
        await first
    _assert_error(second, 429)
    assert int(second.headers["retry-after"]) >= 1


async def test_error_after_stream_started_is_error_event_then_done(echo_aliases):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                          "messages": [{"role": "user", "content": "x BOOM y"}]})
    events = _sse(resp.text)
    assert resp.status_code == 200
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    err = json.loads(events[-2])["error"]
    assert err["type"] == "backend_error" and "fail_marker" in err["message"]


async def test_unknown_route_and_method_in_openai_shape(echo_aliases):
    async with _client() as c:
        missing = await c.get("/v2/nothing/here/at/all")
        method = await c.get("/v1/chat/completions")
    _assert_error(missing, 404)
    _assert_error(method, 405)


async def test_embeddings_float_and_base64(echo_aliases):
    import base64
    import struct

    async with _client() as c:
        floats = await c.post("/v1/embeddings", json={"model": "gw_echo", "input": ["hi there", "x"]})
        b64 = await c.post("/v1/embeddings", json={"model": "gw_echo", "input": "hi there",
                                                   "encoding_format": "base64"})
    data = floats.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and data[0]["embedding"][0] == 8.0
    decoded = struct.unpack("<4f", base64.b64decode(b64.json()["data"][0]["embedding"]))
    assert list(decoded) == data[0]["embedding"]
    assert floats.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # echo counts words


async def test_models_lists_deployed_aliases(echo_aliases):
    async with _client() as c:
        resp = await c.get("/v1/models")
        one = await c.get("/v1/models/gw_echo")
    ids = {m["id"] for m in resp.json()["data"]}
    assert {"gw_echo", "gw_tiny"} <= ids
    assert one.json()["backend"] == "custom/echo"


async def test_tgi_generate_and_stream(echo_aliases):
    async with _client() as c:
        gen = await c.post("/gw_echo/generate", json={"inputs": "a b c", "parameters": {"max_new_tokens": 2}})
        stream = await c.post("/gw_echo/generate_stream", json={"inputs": "a b c"})
        root = await c.post("/gw_echo/", json={"inputs": "a b", "parameters": {"return_full_text": True}})
        info = await c.get("/gw_echo/info")
        health = await c.get("/gw_echo/health")
    assert gen.json()[0]["generated_text"] == "a b" and gen.json()[0]["details"]["finish_reason"] == "length"
    events = [json.loads(e) for e in _sse(stream.text)]
    assert "".join(e["token"]["text"] for e in events) == "a b c"
    assert events[-1]["generated_text"] == "a b c" and all(e["generated_text"] is None for e in events[:-1])
    assert root.json()[0]["generated_text"] == "a ba b"
    assert info.json()["model_id"] == "gw_echo"
    assert health.status_code == 200


async def test_tgi_unsupported_parameter_is_400(echo_aliases):
    async with _client() as c:
        resp = await c.post("/gw_echo/generate", json={"inputs": "a", "parameters": {"watermark": True}})
    _assert_error(resp, 400, "parameters.watermark")


async def test_simple_endpoints(echo_aliases):
    async with _client() as c:
        seed4 = await c.post("/gw_echo/", json={"prompt": "hello you", "history": [["q", "a"]]})
        get = await c.get("/gw_echo/chat", params={"prompt": "who are you"})
        post = await c.post("/gw_echo/chat", json={"prompt": "who are you"})
    body = seed4.json()
    assert body["response"] == "hello you" and body["status"] == 200
    assert body["history"] == [["q", "a"], ["hello you", "hello you"]] and len(body["time"]) == 19
    assert get.headers["content-type"].startswith("text/plain") and get.text == "who are you"
    assert post.text == "who are you"


async def test_auth_missing_invalid_forbidden_and_open_health(echo_aliases):
    keys = KeyTable.from_text("all-key\nechoonly=gw_echo")
    async with _client(keys) as c:
        missing = await c.post("/v1/chat/completions", json=CHAT)
        wrong = await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
        limited = {"Authorization": "Bearer echoonly"}
        forbidden = await c.post("/gw_tiny/generate", json={"inputs": "a"}, headers=limited)
        allowed = await c.post("/v1/chat/completions", json=CHAT, headers=limited)
        models = await c.get("/v1/models", headers=limited)
        full = await c.get("/v1/models", headers={"Authorization": "Bearer all-key"})
        health = await c.get("/health")
        alias_health = await c.get("/gw_echo/health")
        metrics = await c.get("/metrics")
    assert _assert_error(missing, 401)["type"] == "authentication_error"
    _assert_error(wrong, 401)
    assert _assert_error(forbidden, 403)["type"] == "permission_error"
    assert allowed.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["gw_echo"]
    assert {"gw_echo", "gw_tiny"} <= {m["id"] for m in full.json()["data"]}
    assert health.status_code == 200 and alias_health.status_code == 200
    _assert_error(metrics, 401)


async def test_metrics_count_requests(echo_aliases):
    async with _client() as c:
        await c.post("/v1/chat/completions", json=CHAT)
        text = (await c.get("/metrics")).text
    assert 'byzer_like_gateway_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text


async def test_adapters_by_model_name_tgi_adapter_id_and_adapter_name(echo_aliases):
    from byzer_like import Client

    client = Client("gw_echo")
    client.add_adapter("gwlora", "x")
    try:
        async with _client() as c:
            models = (await c.get("/v1/models")).json()["data"]
            card = await c.get("/v1/models/gw_echo:gwlora")
            qualified = await c.post("/v1/chat/completions", json={
                "model": "gw_echo:gwlora", "messages": [{"role": "user", "content": "hi there"}]})
            plain = await c.post("/v1/chat/completions", json={
                "model": "gwlora", "messages": [{"role": "user", "content": "hi there"}], "stream": True})
            base = await c.post("/v1/completions", json={"model": "gw_echo", "prompt": "hi there"})
            completion = await c.post("/v1/completions", json={"model": "gw_echo:gwlora", "prompt": "p q"})
            tgi = await c.post("/gw_echo/generate", json={"inputs": "a b", "parameters": {"adapter_id": "gwlora"}})
            seed = await c.post("/gw_echo/", json={"prompt": "yo", "adapter_name": "gwlora"})
            get = await c.get("/gw_echo/chat", params={"prompt": "yo", "adapter_name": "gwlora"})
            missing = await c.post("/v1/chat/completions", json={
                "model": "gw_echo:nope", "messages": [{"role": "user", "content": "hi"}]})
            tgi_missing = await c.post("/gw_echo/generate", json={"inputs": "a", "parameters": {"adapter_id": "no"}})
            embed = await c.post("/v1/embeddings", json={"model": "gw_echo:gwlora", "input": "x"})
    finally:
        client.remove_adapter("gwlora")
    lora = next(m for m in models if m["id"] == "gw_echo:gwlora")
    assert lora["parent"] == "gw_echo" and card.json()["parent"] == "gw_echo"
    assert qualified.json()["choices"][0]["message"]["content"] == "[gwlora] hi there"
    assert qualified.json()["model"] == "gw_echo:gwlora"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in _sse(plain.text)[:-1]
                   if json.loads(e)["choices"])
    assert text == "[gwlora] hi there"
    assert base.json()["choices"][0]["text"] == "hi there"
    assert completion.json()["choices"][0]["text"] == "[gwlora] p q"
    assert tgi.json()[0]["generated_text"] == "[gwlora] a b"
    assert seed.json()["response"] == "[gwlora] yo" and get.text == "[gwlora] yo"
    err = _assert_error(missing, 404)
    assert "adapter 'nope'" in err["message"]
    assert "adapter 'no'" in _assert_error(tgi_missing, 404)["message"]
    _assert_error(embed, 400, "model")


@pytest.mark.parametrize("field,value,param", [
    ("tools", [{"type": "function", "function": {"name": "f"}}], "tools"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
     "response_format"),
    ("response_format", {"type": "json_object"}, "response_format"),
])
async def test_tools_and_formats_an_alias_cannot_honour_are_a_400_naming_them(echo_aliases, field, value, param):
    async with _client() as c:
        resp = await c.post("/v1/chat/completions", json={**CHAT, field: value})
        neutral = await c.post("/v1/chat/completions", json={**CHAT, "tools": [], "tool_choice": "none",
                                                             "response_format": {"type": "text"}})
        unknown = await c.post("/v1/chat/completions", json={**CHAT, "tools": value if field == "tools" else [],
                                                             "tool_choice": {"type": "function",
                                                                             "function": {"name": "g"}}})
    _assert_error(resp, 400, param)
    assert neutral.status_code == 200, neutral.text
    assert unknown.status_code == 400 and "tool_choice" in unknown.text
