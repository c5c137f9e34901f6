"""The vLLM engine end to end, on one 2-worker deployment reused by the module (engine start-up is ~30-90 s).

Continuous batching is proven by counting overlap: 8 streams sent at once to one worker are all in flight
(first token received, last not yet) at the same moment; a serialising engine would show at most one.
"""

import asyncio
import json
import time

import pytest
import ray

from _engine_models import alive, prepared
from direct_engines import QUESTION, assert_gateway_answers_like, cut_at, stop_word, vllm_chat_many

pytestmark = pytest.mark.slow
ALIAS = "vllm_smol"


@pytest.fixture(scope="module")
def vllm_alias(ray_cluster):
    from conftest import run_cli

    out = run_cli("deploy", "--pretrained_model_type", "custom/auto", "--infer_backend", "vllm",
                  "--model_path", prepared("smollm2-hf"), "--num_workers", "2", "--cpus_per_worker", "1",
                  "--infer_params", "backend.max_model_len=2048", "backend.enforce_eager=true",
                  "--model", ALIAS, timeout=900)
    assert out.returncode == 0, out.stderr
    yield ALIAS
    run_cli("undeploy", "--model", ALIAS, "--force")


@pytest.fixture(scope="module")
def direct():
    """SmolLM2's greedy answer from vLLM's own offline ``LLM.chat`` on this machine, with the worker's settings."""
    return vllm_chat_many(prepared("smollm2-hf"), [{"text": QUESTION, "max_tokens": 24}], max_model_len=2048)[0]


def test_answer_is_what_vllm_answers_directly_streams_and_stat(vllm_alias, cli, direct):
    from byzer_like import Client

    client = Client(vllm_alias, timeout=300)
    for _ in range(2):  # LRU: once on each worker
        answer = client.chat(QUESTION, max_tokens=24, temperature=0)
        assert answer.text == direct.text and answer.finish_reason == direct.finish_reason
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (direct.prompt_tokens,
                                                                                direct.completion_tokens)
    chunks = list(client.stream(QUESTION, max_tokens=24, temperature=0))
    assert len([c for c in chunks if c.text]) >= 1 and "".join(c.text for c in chunks) == direct.text
    out = cli("chat", vllm_alias, QUESTION, "--max-tokens", "24", "--temperature", "0", timeout=300)
    assert out.returncode == 0 and out.stdout == direct.text + "\n", out.stderr
    word = stop_word(direct.text)
    stopped = client.chat(QUESTION, max_tokens=24, temperature=0, stop=[word])
    assert stopped.text == cut_at(direct.text, word) and stopped.finish_reason == "stop"
    exact = client.chat("Count.", max_tokens=7, ignore_eos=True, top_k=5, min_p=0.01, seed=3,
                        repetition_penalty=1.05, stop_token_ids=[2])
    assert exact.usage.completion_tokens == 7 and exact.finish_reason == "length"  # ignore_eos: every token is made
    stat = json.loads(cli("stat", "--model", vllm_alias, "--json").stdout)
    assert stat["total_workers"] == 2 and stat["busy_workers"] == 0 and stat["worker_max_concurrency"] == 32
    assert sum(stat["total_requests"]) >= 6 and min(stat["total_requests"]) >= 1


def test_eight_streams_overlap_on_one_worker(vllm_alias):
    worker = ray.get_actor(f"{vllm_alias}/worker-0", namespace="byzer_like")
    from byzer_like.protocol import ChatRequest

    events: list[tuple[float, int, str]] = []

    async def one(i: int) -> int:
        req = ChatRequest(messages=[{"role": "user", "content": f"Tell story {i}."}], max_tokens=24, ignore_eos=True)
        first, tokens = True, 0
        async for ref in worker.chat_stream.remote(req):
            chunk = await ref
            if chunk.text and first:
                events.append((time.perf_counter(), +1, "first"))
                first = False
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        events.append((time.perf_counter(), -1, "last"))
        return tokens

    async def run() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    assert asyncio.run(run()) == [24] * 8
    in_flight, peak = 0, 0
    for _, delta, _ in sorted(events):
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak >= 4, f"at most {peak} of 8 streams were generating at once; expected continuous batching"


def _engine_unfinished(alias):
    return sum(ray.get(ray.get_actor(f"{alias}/worker-{i}", namespace="byzer_like").describe.remote())
               ["engine_unfinished_requests"] for i in range(2))


def test_abandoned_stream_is_aborted(vllm_alias):
    from byzer_like import Client

    client = Client(vllm_alias, timeout=300)
    # 2,000 tokens would keep the engine busy for minutes here; an aborted request leaves it at once
    with client.stream("Write a long essay.", max_tokens=2000, ignore_eos=True) as stream:
        next(iter(stream))
        assert _engine_unfinished(vllm_alias) == 1
    deadline = time.monotonic() + 15
    while _engine_unfinished(vllm_alias) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _engine_unfinished(vllm_alias) == 0, "the engine still generates for a stream nobody reads"
    answer = client.chat(QUESTION, max_tokens=16, temperature=0)  # the engine still serves
    assert answer.text
    assert client.stat()["busy_workers"] == 0


def test_gateway_answer_is_the_engines_own(ray_cluster, vllm_alias, direct):
    from conftest import gateway_serving

    with gateway_serving() as url:
        assert_gateway_answers_like(direct, url, vllm_alias, max_tokens=24)


def test_structured_outputs_and_tools_through_the_gateway(ray_cluster, vllm_alias):
    """The openai SDK and LangChain through the gateway: json_schema 20/20, forced tools, a round trip (vLLM's
    structured outputs constrain every answer)."""
    from conftest import gateway_serving
    from structured_checks import (check_forced_tool_call, check_json_object_and_stream, check_json_schema_answers,
                                   check_langchain, check_tool_round_trip)

    with gateway_serving() as url:
        check_json_schema_answers(url, vllm_alias, workers=4)
        check_json_object_and_stream(url, vllm_alias)
        check_forced_tool_call(url, vllm_alias)
        check_tool_round_trip(url, vllm_alias)
        check_langchain(url, vllm_alias)


def test_unfit_or_bad_options_leave_nothing(ray_cluster, cli):
    from byzer_like.pool import list_aliases

    bad = cli("deploy", "--infer_backend", "vllm", "--model_path", prepared("tiny-random"),
              "--infer_params", "backend.max_model_len=1024", "backend.not_an_arg=3", "--model", "vllm_bad")
    assert bad.returncode == 2 and "not_an_arg" in bad.stderr
    gguf = cli("deploy", "--infer_backend", "vllm", "--model_path", prepared("gemma3-gguf"), "--model", "vllm_bad")
    assert gguf.returncode == 2 and "Hugging Face folder" in gguf.stderr
    unfit = cli("deploy", "--infer_backend", "vllm", "--model_path", prepared("tiny-random"),
                "--infer_params", "backend.max_model_len=1000000", "--model", "vllm_bad", timeout=600)
    assert unfit.returncode != 0 and "max_model_len" in unfit.stderr
    assert "vllm_bad" not in list_aliases()


def test_undeploy_leaves_no_engine_process(vllm_alias, cli):
    info = [ray.get(ray.get_actor(f"{vllm_alias}/worker-{i}", namespace="byzer_like").describe.remote())
            for i in range(2)]
    pids = [p for d in info for p in d["engine_pids"]] + [d["pid"] for d in info]
    assert info[0]["engine_pids"], "vLLM should run its engine core in a subprocess"
    out = cli("undeploy", "--model", vllm_alias)
    assert out.returncode == 0, out.stderr
    deadline = time.time() + 30
    while alive(pids) and time.time() < deadline:
        time.sleep(0.5)
    assert alive(pids) == []
