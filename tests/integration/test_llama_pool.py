"""The acceptance tests of the core on the real model: SmolLM2 on llama.cpp, 2 workers, on a real Ray cluster."""

import asyncio
import os
import subprocess
import sys
import time

import pytest
import ray

from byzer_like import AsyncClient, Client, DeploySpec
from byzer_like.errors import InvalidRequestError, ModelLoadError
from byzer_like.pool import deploy, list_aliases, undeploy
from byzer_like._ray import named_actors
from direct_engines import QUESTION, cut_at, llama_chat, stop_word
from conftest import wait_for

PARIS_Q = QUESTION


def smol_spec(alias, **resources):
    return DeploySpec.model_validate({"alias": alias, "backend": {"infer_backend": "llama_cpp"},
                                      "resources": {"num_workers": 2, "cpus_per_worker": 1, **resources}})


def alive_actors_named(prefix):
    from ray.util.state import list_actors

    return [a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
            if a.name and a.name.startswith(prefix)]


@pytest.fixture(scope="module")
def smol(ray_cluster):
    deploy(smol_spec("smol_it"))
    yield Client("smol_it")
    if "smol_it" in list_aliases():
        undeploy("smol_it", force=True)


@pytest.fixture(scope="module")
def direct(smollm2_path):
    """SmolLM2's greedy answer from llama-cpp-python itself, on this machine (1 thread, as each worker)."""
    return llama_chat(smollm2_path, PARIS_Q, max_tokens=48)


def test_the_real_model_is_loaded(smol):
    resp = smol.chat(PARIS_Q, temperature=0, max_tokens=48)
    assert resp.text.strip() and resp.finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 10 and 0 < resp.usage.completion_tokens <= 48
    assert resp.timings.total_s > 0 and resp.timings.first_token_s is not None


def test_every_worker_answers_exactly_what_llama_cpp_answers(smol, direct):
    answers = [smol.chat(PARIS_Q, temperature=0, max_tokens=48) for _ in range(2)]  # LRU: one on each worker
    for resp in answers:
        assert resp.text == direct.text
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (direct.prompt_tokens,
                                                                            direct.completion_tokens)
        assert resp.finish_reason == direct.finish_reason


def test_streaming_and_unary_agree(smol, direct):
    chunks = list(smol.stream(PARIS_Q, temperature=0, max_tokens=48))
    assert "".join(c.text for c in chunks) == direct.text
    assert chunks[-1].finish_reason == direct.finish_reason
    assert chunks[-1].usage.completion_tokens == direct.completion_tokens


def test_stream_yields_tokens_then_finish_and_usage(smol):
    chunks = list(smol.stream(PARIS_Q, temperature=0, max_tokens=16))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 3
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens <= 16


def test_max_tokens_is_honoured_with_length_finish(smol):
    resp = smol.complete("Once upon a time", max_tokens=5, temperature=0)
    assert resp.finish_reason == "length" and resp.usage.completion_tokens == 5


def test_requests_are_spread_over_workers_as_lru_predicts(smol):
    before = smol.stat()["total_requests"]
    k = 6
    for _ in range(k):
        smol.chat("Say hi.", max_tokens=2)
    after = smol.stat()["total_requests"]
    delta = [a - b for a, b in zip(after, before)]
    assert sum(delta) == k
    assert delta == [k // 2, k // 2]  # sequential requests alternate: least recently dispatched first


def test_state_shows_busy_worker_while_streaming_and_free_after(smol):
    stream = smol.stream("Write a long story about a dragon.", max_tokens=200)
    it = iter(stream)
    next(it)
    stat = smol.stat()
    assert stat["busy_workers"] == 1 and stat["idle_workers"] == 1
    assert sorted(stat["state"]) == [0, 1] and sum(stat["running_requests"]) == 1
    stream.close()
    assert wait_for(lambda: smol.stat()["state"] == [1, 1])


def test_cancelled_stream_frees_slot_and_worker_stays_usable(smol):
    with smol.stream("Count from one to one hundred.", max_tokens=300) as stream:
        for _ in zip(range(3), stream):
            pass
    assert wait_for(lambda: smol.stat()["state"] == [1, 1], timeout=15)
    for _ in range(2):  # both workers answer again
        assert smol.chat("Say hi.", max_tokens=4).usage.completion_tokens > 0


def test_error_returns_the_slot_and_is_counted(smol):
    errors_before = sum(smol.stat()["errors"])
    with pytest.raises(InvalidRequestError, match="context window") as info:
        smol.chat("word " * 5000, max_tokens=4)
    assert info.value.status_code == 400
    stat = smol.stat()
    assert stat["state"] == [1, 1] and sum(stat["errors"]) == errors_before + 1


def test_caller_gone_mid_stream_frees_the_slot(smol, ray_cluster):
    script = (
        "import os, sys\n"
        "from byzer_like import Client\n"
        "s = Client('smol_it').stream('Tell me a very long story.', max_tokens=400)\n"
        "next(iter(s)); print('streaming', flush=True); os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_ADDRESS": ray_cluster})
    assert "streaming" in out.stdout, out.stderr[-2000:]
    assert wait_for(lambda: smol.stat()["state"] == [1, 1], timeout=60)


def test_last_work_time_moves(smol):
    time.sleep(1.2)
    before = [float(t[:-1]) for t in smol.stat()["workers_last_work_time"]]
    smol.chat("Say hi.", max_tokens=2)
    after = [float(t[:-1]) for t in smol.stat()["workers_last_work_time"]]
    assert min(after) < 1.0 <= min(before)
    assert sum(1 for a, b in zip(after, before) if a < b) == 1  # exactly the dispatched worker moved


def test_llama_worker_concurrency_serialises_safely(ray_cluster, deployed):
    deployed(smol_spec("smol_conc", num_workers=1, worker_concurrency=3))
    client = Client("smol_conc")
    expected = client.chat(PARIS_Q, temperature=0, max_tokens=24).text

    async def many():
        aclient = AsyncClient("smol_conc")
        return await asyncio.gather(*(aclient.chat(PARIS_Q, temperature=0, max_tokens=24) for _ in range(3)))

    answers = asyncio.run(many())
    assert [a.text for a in answers] == [expected] * 3
    assert client.stat()["total_requests"] == [4] and client.stat()["state"] == [3]


def test_undeploy_leaves_no_actor_of_the_alias(ray_cluster):
    deploy(smol_spec("smol_gone"))
    assert sorted(alive_actors_named("smol_gone")) == ["smol_gone", "smol_gone/worker-0", "smol_gone/worker-1"]
    undeploy("smol_gone")
    assert "smol_gone" not in list_aliases()
    assert wait_for(lambda: not alive_actors_named("smol_gone"))
    assert not [n for n in named_actors() if n.startswith("smol_gone")]


def test_failing_load_shows_engine_error_and_leaves_nothing(ray_cluster, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))
    spec = DeploySpec.model_validate({"alias": "smol_broken", "backend": {"model_path": str(broken)},
                                      "resources": {"num_workers": 2, "cpus_per_worker": 1}})
    with pytest.raises(ModelLoadError, match="llama.cpp could not load"):
        deploy(spec)
    assert "smol_broken" not in list_aliases()
    assert wait_for(lambda: not alive_actors_named("smol_broken"))


def test_workers_are_named_with_resources_in_the_namespace(smol):
    from ray.util.state import list_actors

    rows = {a.name: a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)
            if a.name and a.name.startswith("smol_it")}
    assert set(rows) == {"smol_it", "smol_it/worker-0", "smol_it/worker-1"}
    assert all(r.ray_namespace == "byzer_like" for r in rows.values())
    assert rows["smol_it/worker-0"].class_name == "Worker" and rows["smol_it"].class_name == "Router"
    assert rows["smol_it/worker-1"].required_resources.get("CPU") == 1.0
    assert ray.get_actor("smol_it/worker-1", namespace="byzer_like") is not None


def test_stop_strings_end_the_answer_before_the_stop_text(smol, direct, smollm2_path):
    word = stop_word(direct.text)  # a word the engine's own answer contains, whatever this CPU makes it say
    cut = smol.chat(PARIS_Q, temperature=0, max_tokens=48, stop=[word])
    assert cut.text == cut_at(direct.text, word) and cut.finish_reason == "stop"
    engine = llama_chat(smollm2_path, PARIS_Q, max_tokens=48, stop=[word])
    assert (cut.text, cut.usage.completion_tokens) == (engine.text, engine.completion_tokens)
    streamed = "".join(c.text for c in smol.stream(PARIS_Q, temperature=0, max_tokens=48, stop=[word]))
    assert streamed == cut.text


def test_llama_threads_follow_cpus_per_worker(smol):
    facts = ray.get(ray.get_actor("smol_it/worker-0", namespace="byzer_like").describe.remote())
    assert facts["n_threads"] == 1 and facts["model_path"].endswith(".gguf")
