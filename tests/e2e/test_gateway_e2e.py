"""The gateway for real: ``byzer-like serve`` on the session cluster (uvicorn in a Ray actor; Ray Serve's proxy in
``test_ray_serve_server_option_serves_the_same_api``), driven by the real
``openai`` SDK (sync, async, streaming, embeddings), the real ``text_generation`` client and raw HTTP, against a
llama.cpp SmolLM2 alias and echo aliases.
"""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest
import text_generation

from byzer_like import Client, DeploySpec
from direct_engines import QUESTION, llama_chat
from byzer_like.spec import BackendSpec, ResourceSpec

KEY = "e2e-secret-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(ray_cluster):
    """Deploy the aliases, start the gateway with the CLI, yield its URL; stop everything after."""
    from tests.conftest import run_cli
    from byzer_like.pool import deploy, list_aliases, undeploy

    specs = [DeploySpec(alias="e2e_smol", backend=BackendSpec(infer_backend="llama_cpp")),
             DeploySpec(alias="e2e_echo", backend=BackendSpec(model_type="custom/echo",
                                                               engine_kwargs={"token_delay_s": 0.05})),
             DeploySpec(alias="e2e_slow", backend=BackendSpec(model_type="custom/echo",
                                                               engine_kwargs={"token_delay_s": 0.3}),
                        resources=ResourceSpec(worker_concurrency=2))]
    for spec in specs:
        deploy(spec, replace=True)
    port = _free_port()
    done = run_cli("serve", "--port", str(port), "--api-key-env", "E2E_GW_KEYS",
                   env={"E2E_GW_KEYS": f"{KEY} limited=e2e_echo"})
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr  # keys are never printed
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    yield url
    stopped = run_cli("serve", "--stop")
    for spec in specs:
        if spec.alias in list_aliases():
            undeploy(spec.alias, force=True)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr


def _wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("gateway did not become ready")


@pytest.fixture()
def oai(gateway):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def direct():
    """SmolLM2's greedy answer from llama-cpp-python itself on this machine (1 thread, as each worker)."""
    from byzer_like.models import bundled_smollm2_gguf

    return llama_chat(str(bundled_smollm2_gguf()), QUESTION, max_tokens=48)


def test_openai_sync_chat_is_the_engines_answer(oai, direct):
    resp = oai.chat.completions.create(model="e2e_smol", temperature=0, max_tokens=48,
                                       messages=[{"role": "user", "content": QUESTION}])
    assert resp.choices[0].message.content == direct.text
    assert resp.choices[0].finish_reason == direct.finish_reason
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (direct.prompt_tokens,
                                                                        direct.completion_tokens)


def test_openai_streaming_with_usage(oai, direct):
    stream = oai.chat.completions.create(model="e2e_smol", temperature=0, max_tokens=48, stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == direct.completion_tokens


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_openai_async_chat_and_completion(gateway):
    client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
    chat = await client.chat.completions.create(model="e2e_echo", messages=[{"role": "user", "content": "hi there"}])
    comp = await client.completions.create(model="e2e_smol", prompt="The capital of France is", max_tokens=8,
                                           temperature=0)
    assert chat.choices[0].message.content == "hi there"
    assert comp.choices[0].text.strip() and comp.usage.completion_tokens <= 8
    await client.close()


def test_openai_embeddings_default_base64(oai):
    resp = oai.embeddings.create(model="e2e_echo", input=["hello world", "x"])  # the SDK asks for base64
    assert [len(d.embedding) for d in resp.data] == [4, 4]
    assert resp.data[0].embedding[:3] == [11.0, 3.0, 1.0]


def test_openai_models_and_errors(oai):
    ids = {m.id for m in oai.models.list().data}
    assert {"e2e_smol", "e2e_echo", "e2e_slow"} <= ids
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="e2e_echo", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"min_p": 0.1})
    assert info.value.body["param"] == "min_p"


def test_openai_auth_through_proxy(gateway):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway}/v1", api_key="wrong", max_retries=0).models.list()
    limited = openai.OpenAI(base_url=f"{gateway}/v1", api_key="limited", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model="e2e_smol", messages=[{"role": "user", "content": "x"}])
    assert [m.id for m in limited.models.list().data] == ["e2e_echo"]
    assert httpx.get(f"{gateway}/health").status_code == 200


def test_text_generation_client(gateway):
    client = text_generation.Client(f"{gateway}/e2e_smol", headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    resp = client.generate("The capital of France is", max_new_tokens=8)
    assert resp.generated_text and resp.details.generated_tokens <= 8
    tokens = list(client.generate_stream("The capital of France is", max_new_tokens=8))
    assert tokens[-1].generated_text == "".join(t.token.text for t in tokens)
    assert tokens[-1].details.finish_reason.value in ("length", "eos_token")


def test_simple_endpoints_raw_http(gateway):
    auth = {"Authorization": f"Bearer {KEY}"}
    seed4 = httpx.post(f"{gateway}/e2e_echo/", json={"prompt": "hello", "history": []}, headers=auth)
    seed3 = httpx.get(f"{gateway}/e2e_echo/chat", params={"prompt": "who are you"}, headers=auth)
    assert seed4.json()["response"] == "hello" and seed4.json()["history"] == [["hello", "hello"]]
    assert seed3.text == "who are you" and seed3.headers["content-type"].startswith("text/plain")
    bad = httpx.post(f"{gateway}/v1/chat/completions", content=b"{oops", headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_cancelled_stream_frees_its_slot(gateway):
    words = " ".join(f"w{i}" for i in range(200))  # 200 words x 0.3 s: far longer than the test
    body = {"model": "e2e_slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    stat = Client("e2e_slow").stat
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as resp:
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break
        assert stat()["running_requests"] == [1]
    deadline = time.monotonic() + 15
    while stat()["running_requests"] != [0] and time.monotonic() < deadline:
        time.sleep(0.2)
    final = stat()
    assert final["running_requests"] == [0] and final["state"] == [2]


def test_keeps_serving_across_deploy_and_undeploy(gateway, oai):
    from byzer_like.pool import deploy, undeploy

    deploy(DeploySpec(alias="e2e_late", backend=BackendSpec(model_type="custom/echo")), replace=True)
    try:
        resp = oai.chat.completions.create(model="e2e_late", messages=[{"role": "user", "content": "late"}])
        assert resp.choices[0].message.content == "late"
    finally:
        undeploy("e2e_late", force=True)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="e2e_late", messages=[{"role": "user", "content": "late"}])
    deploy(DeploySpec(alias="e2e_late", backend=BackendSpec(model_type="custom/echo")), replace=True)
    try:  # a redeploy under the same name is picked up (the cached router handle is re-resolved)
        resp = oai.chat.completions.create(model="e2e_late", messages=[{"role": "user", "content": "again"}])
        assert resp.choices[0].message.content == "again"
    finally:
        undeploy("e2e_late", force=True)
    assert "byzer_like_gateway_requests_total" in httpx.get(f"{gateway}/metrics",
                                                            headers={"Authorization": f"Bearer {KEY}"}).text


def test_serve_on_another_port_moves_the_gateway_and_says_so(gateway):
    from tests.conftest import run_cli

    old_port = int(gateway.rsplit(":", 1)[1])
    new_port = _free_port()
    moved = run_cli("serve", "--port", str(new_port), "--api-key-env", "E2E_GW_KEYS",
                    env={"E2E_GW_KEYS": f"{KEY} limited=e2e_echo"})
    try:
        assert moved.returncode == 0, moved.stderr
        assert f"gateway serving at http://127.0.0.1:{new_port} (moved from 127.0.0.1:{old_port})" in moved.stdout
        _wait_ready(f"http://127.0.0.1:{new_port}")
        with pytest.raises(httpx.HTTPError):  # nothing answers on the old port any more
            httpx.get(f"{gateway}/health", timeout=2)
    finally:  # put it back where the module's other tests expect it
        back = run_cli("serve", "--port", str(old_port), "--api-key-env", "E2E_GW_KEYS",
                       env={"E2E_GW_KEYS": f"{KEY} limited=e2e_echo"})
        assert back.returncode == 0, back.stderr
        _wait_ready(gateway)
    same = run_cli("serve", "--port", str(old_port), "--api-key-env", "E2E_GW_KEYS",
                   env={"E2E_GW_KEYS": f"{KEY} limited=e2e_echo"})
    assert same.returncode == 0 and "moved" not in same.stdout  # same address: an update in place


def test_scaled_to_zero_alias_answers_after_a_cold_start(gateway, oai):
    from byzer_like.pool import deploy, undeploy

    deploy(DeploySpec.model_validate({"alias": "e2e_zero", "backend": {"model_type": "custom/echo"},
                                      "scaling": {"min_workers": 0, "max_workers": 1, "max_idle_time_s": 1.0}}),
           replace=True)
    try:
        stat = Client("e2e_zero").stat
        deadline = time.monotonic() + 20
        while stat()["total_workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stat()["total_workers"] == 0
        resp = oai.chat.completions.create(model="e2e_zero", messages=[{"role": "user", "content": "cold"}])
        assert resp.choices[0].message.content == "cold"
        assert any("cold start" in e["why"] for e in stat()["events"])
    finally:
        undeploy("e2e_zero", force=True)


def test_ray_serve_server_option_serves_the_same_api(gateway):
    """``serve --server ray-serve`` (Serve's proxy and replicas) replaces the default uvicorn gateway, serves the same
    API, and says where it moved from; `--stop` ends it."""
    from tests.conftest import run_cli

    old_port, port = int(gateway.rsplit(":", 1)[1]), _free_port()
    keys = {"E2E_GW_KEYS": f"{KEY} limited=e2e_echo"}
    assert run_cli("serve", "--server", "uvicorn", "--replicas", "2", "--port", str(port)).returncode == 2
    started = run_cli("serve", "--server", "ray-serve", "--port", str(port), "--api-key-env", "E2E_GW_KEYS",
                      env=keys)
    try:
        assert started.returncode == 0, started.stderr
        assert (f"gateway serving at http://127.0.0.1:{port} (moved from 127.0.0.1:{old_port}) (1 replica(s)"
                in started.stdout), started.stdout
        assert KEY not in started.stdout + started.stderr
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        with pytest.raises(httpx.HTTPError):  # one gateway at a time: the uvicorn one is gone
            httpx.get(f"{gateway}/health", timeout=2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        msg = [{"role": "user", "content": "one two three"}]
        assert client.chat.completions.create(model="e2e_echo", messages=msg).choices[0].message.content == \
            "one two three"
        streamed = client.chat.completions.create(model="e2e_echo", messages=msg, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "one two three"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no_such_alias", messages=msg)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
                model="e2e_echo", messages=msg)
        stopped = run_cli("serve", "--stop")
        assert stopped.returncode == 0 and "gateway stopped" in stopped.stdout
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)
    finally:  # the default gateway back where the module's fixture expects it
        back = run_cli("serve", "--port", str(old_port), "--api-key-env", "E2E_GW_KEYS", env=keys)
        assert back.returncode == 0, back.stderr
        _wait_ready(gateway)
