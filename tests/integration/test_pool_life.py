"""Pools that live, on a real Ray cluster with real ``kill -9``: supervision, retries, autoscaling, scale to zero,
manual scaling, restart budget. No mock of Ray anywhere."""

import asyncio
import os
import signal
import threading
import time

import pytest

from byzer_like import AsyncClient, Client, DeploySpec
from byzer_like.errors import BackendUnavailableError, ByzerLikeError
from byzer_like.pool import scale
from conftest import wait_for


def echo_spec(alias, *, workers=2, concurrency=1, scaling=None, **options):
    return DeploySpec.model_validate({
        "alias": alias, "backend": {"model_type": "custom/echo", "engine_kwargs": options},
        "resources": {"num_workers": workers, "worker_concurrency": concurrency}, "scaling": scaling or {}})


def kill9(client, row=0):
    pid = client.stat()["pid"][row]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_kill9_of_a_worker_under_load_loses_no_request(deployed):
    deployed(echo_spec("life_kill", workers=2, concurrency=4))
    client = Client("life_kill")
    total, threads, kill_at = 1500, 8, 300
    done, failures, killed_at = [0], [], []
    lock = threading.Lock()

    def worker(n):
        for i in range(n):
            try:
                assert client.chat(f"hello {i}").text == f"hello {i}"
            except (ByzerLikeError, AssertionError) as exc:
                failures.append(repr(exc))
            with lock:
                done[0] += 1
                if done[0] == kill_at:
                    kill9(client)
                    killed_at.append(time.monotonic())

    pool = [threading.Thread(target=worker, args=(total // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    assert killed_at and done[0] == total // threads * threads
    assert failures == []
    assert wait_for(lambda: client.stat()["ready_workers"] == 2, timeout=10)
    assert time.monotonic() - killed_at[0] < 60  # whole run; the replacement itself is checked just above
    stat = client.stat()
    assert stat["total_restarts"] == 1 and sorted(stat["restarts"]) == [0, 1] and stat["healthy"] == [True, True]
    assert any("died" in e["why"] for e in stat["events"])


def test_replacement_is_ready_within_10s_and_stat_is_the_truth(deployed):
    deployed(echo_spec("life_heal", workers=2))
    client = Client("life_heal")
    pid = kill9(client, 1)
    start = time.monotonic()
    assert wait_for(lambda: (lambda st: pid not in st["pid"] and st["ready_workers"] == 2)(client.stat()), timeout=10)
    healed_in = time.monotonic() - start
    assert healed_in < 10
    stat = client.stat()
    assert stat["phase"] == ["ready", "ready"] and stat["status"] == "ok"
    assert stat["desired_workers"] == stat["current_workers"] == 2
    assert [client.chat("x").text for _ in range(4)] == ["x"] * 4


def test_a_stream_cut_by_a_dead_worker_ends_with_a_clear_error(deployed):
    deployed(echo_spec("life_stream", workers=2, token_delay_s=0.2))
    words = " ".join(f"w{i}" for i in range(40))

    async def main():
        aclient = AsyncClient("life_stream")
        client = Client("life_stream")
        got = []

        async def one():
            async for chunk in aclient.stream(words):
                got.append(chunk.text)
                if len(got) == 2:
                    kill9(client, client.stat()["running_requests"].index(1))

        with pytest.raises(BackendUnavailableError, match="died after"):
            await one()
        return await aclient.chat("after the crash")

    assert asyncio.run(main()).text == "after the crash"


def test_requests_and_silent_streams_on_a_dead_worker_are_retried(deployed):
    deployed(echo_spec("life_retry", workers=2, concurrency=2, token_delay_s=2.0))
    client = Client("life_retry")

    async def main():
        aclient = AsyncClient("life_retry")
        unary = asyncio.ensure_future(aclient.chat("slow words"))  # the first word comes after 2 s

        async def streamed():
            return "".join([c.text async for c in aclient.stream("quiet stream")])

        stream = asyncio.ensure_future(streamed())
        await asyncio.sleep(1.0)
        assert sorted(client.stat()["running_requests"]) == [0, 2] or client.stat()["running_requests"] == [1, 1]
        for row, running in enumerate(client.stat()["running_requests"]):
            if running:
                kill9(client, row)
        return (await unary).text, await stream

    assert asyncio.run(main()) == ("slow words", "quiet stream")
    assert client.stat()["retries"] >= 2


def test_autoscaling_reaches_max_under_load_and_returns_to_min_when_idle(deployed):
    scaling = {"min_workers": 1, "max_workers": 3, "max_idle_time_s": 2.0}
    deployed(echo_spec("life_auto", workers=1, token_delay_s=0.1, scaling=scaling))
    client = Client("life_auto")
    stop = threading.Event()

    def load():
        while not stop.is_set():
            client.chat("one two three four five")

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: client.stat()["ready_workers"] == 3, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert wait_for(lambda: (lambda st: st["current_workers"] == 1 and st["total_workers"] == 1)(client.stat()),
                    timeout=30)
    events = client.stat()["events"]
    assert any(e["to"] > e["from"] and "demand" in e["why"] for e in events)
    assert any(e["to"] < e["from"] and "idle" in e["why"] for e in events)


def test_scale_to_zero_and_cold_start(deployed):
    scaling = {"min_workers": 0, "max_workers": 1, "max_idle_time_s": 1.0}
    deployed(echo_spec("life_zero", workers=1, scaling=scaling))
    client = Client("life_zero")
    assert wait_for(lambda: client.stat()["total_workers"] == 0, timeout=20)
    start = time.monotonic()
    assert client.chat("wake up").text == "wake up"  # waits in the queue while a worker starts
    assert time.monotonic() - start < 60
    assert any("cold start" in e["why"] for e in client.stat()["events"])


def test_manual_scale_moves_the_count_and_the_bounds(deployed, cli):
    deployed(echo_spec("life_manual", workers=2))
    client = Client("life_manual")
    out = cli("scale", "life_manual", "--workers", "3")
    assert out.returncode == 0 and "min 3, max 3" in out.stdout, out.stderr
    assert wait_for(lambda: client.stat()["ready_workers"] == 3)
    assert scale("life_manual", 1) == {"min_workers": 1, "max_workers": 1, "workers": 1}
    assert wait_for(lambda: client.stat()["total_workers"] == 1)
    bad = cli("scale", "life_manual", "--workers", "-1")
    assert bad.returncode == 2


def test_restart_storm_is_bounded_then_degraded(deployed):
    deployed(echo_spec("life_storm", workers=1, scaling={"max_restarts": 1}))
    client = Client("life_storm")
    kill9(client)
    assert wait_for(lambda: (lambda st: st["ready_workers"] == 1 and st["total_restarts"] == 1)(client.stat()))
    kill9(client)
    assert wait_for(lambda: client.stat()["status"] == "degraded", timeout=15)
    stat = client.stat()
    assert stat["current_workers"] == 0 and "died" in stat["last_error"]
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="degraded"):
        client.chat("anyone?")
    assert time.monotonic() - start < 5  # fails fast, never waits for a worker that will not come
    scale("life_storm", 1)  # a person tries again
    assert client.chat("back").text == "back"


def test_llama_worker_killed_during_streaming_chats(deployed):
    deployed(DeploySpec.model_validate({"alias": "life_llama", "backend": {"infer_backend": "llama_cpp"},
                                        "resources": {"num_workers": 2, "cpus_per_worker": 1}}))
    client = Client("life_llama")

    async def main():
        aclient = AsyncClient("life_llama")
        started, streaming = asyncio.Event(), set()

        async def one(i):
            texts = []
            try:
                async for chunk in aclient.stream(f"Tell me a long story about a dragon number {i}.", max_tokens=120,
                                                  temperature=0):
                    texts.append(chunk.text)
                    streaming.add(i)
                    if len(streaming) == 2:  # both workers have sent chunks of their stream
                        started.set()
                return "ok", "".join(texts)
            except BackendUnavailableError as exc:
                return ("cut" if texts else "failed"), str(exc)

        tasks = [asyncio.ensure_future(one(i)) for i in range(6)]  # 2 stream at once, 4 wait in the queue
        await started.wait()
        kill9(client, client.stat()["running_requests"].index(1))
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    outcomes = [r[0] for r in results]
    assert outcomes.count("cut") == 1 and outcomes.count("ok") == 5, results
    assert "died after" in next(r[1] for r in results if r[0] == "cut")
    assert wait_for(lambda: client.stat()["ready_workers"] == 2, timeout=30)
    assert client.chat("Say hi.", max_tokens=8).text
