"""Router behaviour on a real Ray cluster with the echo backend: queueing, overload, slots, errors, timeouts."""

import asyncio
import time

import pytest

from byzer_like import AsyncClient, Client, DeploySpec
from byzer_like.errors import (AliasExistsError, BackendError, ModelLoadError, ModelNotFoundError, OverloadedError,
                               RequestTimeoutError, UnsupportedError)
from byzer_like.pool import list_aliases
from byzer_like._ray import named_actors
from conftest import wait_for


def echo_spec(alias, *, workers=1, concurrency=1, max_queue=8, timeout_s=30.0, **options):
    return DeploySpec.model_validate({
        "alias": alias, "backend": {"model_type": "custom/echo", "engine_kwargs": options},
        "resources": {"num_workers": workers, "worker_concurrency": concurrency},
        "queue": {"max_queue": max_queue, "request_timeout_s": timeout_s}})


def test_chat_stream_complete_and_stat(deployed):
    deployed(echo_spec("r_basic", workers=2, concurrency=4))
    client = Client("r_basic")
    resp = client.chat("hello there world")
    assert resp.text == "hello there world" and resp.finish_reason == "stop"
    assert resp.usage.completion_tokens == 3
    chunks = list(client.stream("a b c"))
    assert "".join(c.text for c in chunks) == "a b c" and chunks[-1].finish_reason == "stop"
    assert client.complete("x y", max_tokens=1).finish_reason == "length"
    stat = client.stat()
    assert sum(stat["total_requests"]) == 3 and stat["state"] == [4, 4] and stat["busy_workers"] == 0


def test_stream_holds_its_slot_until_it_ends(deployed):
    deployed(echo_spec("r_hold", token_delay_s=0.1))
    client = Client("r_hold")
    words = " ".join(f"w{i}" for i in range(20))  # 2 s of stream
    stream = client.stream(words)
    first = next(iter(stream))  # NOTE: a temporary iterator, collected at once, must not cancel the stream
    import gc

    gc.collect()
    time.sleep(0.3)
    stat = client.stat()
    assert stat["state"] == [0] and stat["busy_workers"] == 1 and stat["running_requests"] == [1]
    rest = list(stream)
    assert first.text + "".join(c.text for c in rest) == words
    assert rest[-1].finish_reason == "stop"
    assert client.stat()["state"] == [1]


def test_full_queue_is_a_typed_overload_not_a_hang(deployed):
    deployed(echo_spec("r_full", max_queue=1, token_delay_s=0.3))
    client = Client("r_full")

    async def main():
        aclient = AsyncClient("r_full")
        running = asyncio.create_task(aclient.chat("a b c d"))
        await asyncio.sleep(0.3)
        queued = asyncio.create_task(aclient.chat("e f"))
        await asyncio.sleep(0.3)
        assert client.stat()["queue_length"] == 1
        start = time.monotonic()
        with pytest.raises(OverloadedError) as info:
            await aclient.chat("g h")
        assert time.monotonic() - start < 2.0
        assert info.value.retry_after == 2.0  # (1 queued + this one) x 1 s (no latency known yet) / 1 slot
        return (await running).text, (await queued).text

    assert asyncio.run(main()) == ("a b c d", "e f")
    assert client.stat()["state"] == [1] and client.stat()["queue_length"] == 0


def test_queue_wait_past_request_timeout_is_overloaded(deployed):
    deployed(echo_spec("r_qto", timeout_s=0.3, token_delay_s=0.5))

    async def main():
        aclient = AsyncClient("r_qto")
        running = asyncio.create_task(aclient.chat("slow slow slow"))
        await asyncio.sleep(0.2)
        with pytest.raises(OverloadedError, match="no slot freed within 0.3s"):
            await aclient.chat("waits")
        await running

    asyncio.run(main())
    assert Client("r_qto").stat()["queue_length"] == 0


def test_queued_requests_are_served_in_arrival_order(deployed):
    deployed(echo_spec("r_fifo", token_delay_s=0.05))
    finished = []

    async def main():
        aclient = AsyncClient("r_fifo")

        async def one(i):
            await aclient.chat(f"req {i}")
            finished.append(i)

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.05)  # arrive in order
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert finished == [0, 1, 2, 3, 4]


def test_mid_stream_error_ends_stream_with_error_and_frees_slot(deployed):
    deployed(echo_spec("r_err", fail_marker="boom"))
    client = Client("r_err")
    got = []
    with pytest.raises(BackendError, match="failed on purpose"):
        for chunk in client.stream("first boom third"):
            got.append(chunk.text)
    assert got == ["first"]
    stat = client.stat()
    assert stat["state"] == [1] and stat["errors"] == [1]
    assert client.chat("still works").text == "still works"


def test_unsupported_param_crosses_actors_as_typed_error(deployed):
    deployed(echo_spec("r_param"))
    with pytest.raises(UnsupportedError) as info:
        Client("r_param").chat("x", min_p=0.1)
    assert info.value.param == "min_p" and info.value.status_code == 400
    assert Client("r_param").stat()["state"] == [1]


def test_client_timeout_cancels_and_frees_slot(deployed):
    deployed(echo_spec("r_timeout", token_delay_s=0.5))
    client = Client("r_timeout", timeout=0.3)
    with pytest.raises(RequestTimeoutError):
        client.chat("a b c d e f")
    assert wait_for(lambda: client.stat()["state"] == [1], timeout=10)


def test_closed_stream_is_cancelled_and_frees_slot(deployed):
    deployed(echo_spec("r_cancel", token_delay_s=0.2))
    client = Client("r_cancel")
    with client.stream(" ".join(["w"] * 50)) as stream:
        for _ in zip(range(2), stream):
            pass
    assert wait_for(lambda: client.stat()["state"] == [1], timeout=5)


def test_async_stream(deployed):
    deployed(echo_spec("r_async", concurrency=8))

    async def main():
        aclient = AsyncClient("r_async")
        texts = await asyncio.gather(*(aclient.chat(f"n {i}") for i in range(8)))
        streamed = [c.text async for c in aclient.stream("p q r")]
        return [t.text for t in texts], streamed, await aclient.stat()

    texts, streamed, stat = asyncio.run(main())
    assert texts == [f"n {i}" for i in range(8)]
    assert "".join(streamed) == "p q r" and stat["total_requests"] == [9]


def test_duplicate_alias_is_refused_unless_replacing(deployed):
    deployed(echo_spec("r_dup"))
    with pytest.raises(AliasExistsError, match="already deployed"):
        deployed(echo_spec("r_dup", workers=2))
    assert Client("r_dup").stat()["total_workers"] == 1
    deployed(echo_spec("r_dup", workers=2), replace=True)
    assert Client("r_dup").stat()["total_workers"] == 2


def test_failed_load_leaves_nothing_behind(deployed):
    with pytest.raises(ModelLoadError, match="weights are broken"):
        deployed(echo_spec("r_badload", workers=2, load_error="weights are broken"))
    assert wait_for(lambda: not [n for n in named_actors() if n.startswith("r_badload")])
    assert "r_badload" not in list_aliases()


def test_unknown_alias_is_model_not_found(ray_cluster):
    with pytest.raises(ModelNotFoundError, match="no deployment named 'nope'"):
        Client("nope")


def test_stat_counts_tokens_from_unary_and_streamed_answers(deployed):
    deployed(echo_spec("r_tokens", workers=1, concurrency=4))
    client = Client("r_tokens")
    client.chat("one two three")
    list(client.stream("four five"))
    stat = client.stat()
    assert stat["completion_tokens"] == [5] and stat["prompt_tokens"] == [5]
    assert stat["tokens_per_s"][0] > 0


def test_router_killed_is_restarted_by_ray_and_reattaches_its_workers(deployed):
    import ray

    deployed(echo_spec("r_restart", workers=2))
    client = Client("r_restart")
    assert client.chat("before").text == "before"
    workers = {n for n in named_actors() if n.startswith("r_restart/")}
    ray.kill(ray.get_actor("r_restart", namespace="byzer_like"), no_restart=False)
    answer = None
    deadline = time.monotonic() + 60
    while answer is None and time.monotonic() < deadline:
        try:
            answer = Client("r_restart").chat("after").text
        except Exception:  # noqa: BLE001 - restarting
            time.sleep(0.5)
    assert answer == "after"
    assert {n for n in named_actors() if n.startswith("r_restart/")} == workers  # the same workers, none new
    stat = Client("r_restart").stat()
    assert stat["total_workers"] == 2 and sum(stat["total_requests"]) == 1  # counters start afresh


def test_breaking_out_of_a_stream_cancels_it_and_frees_the_slot(deployed):
    deployed(echo_spec("r_break", token_delay_s=0.2))
    client = Client("r_break")
    for i, _ in enumerate(client.stream(" ".join(["w"] * 50))):  # 10 s of stream if left running
        if i == 1:
            break
    assert wait_for(lambda: client.stat()["state"] == [1], timeout=5)


def test_a_leased_stream_frees_its_slot_when_it_ends_and_an_unused_lease_is_taken_back(deployed):
    import ray

    from byzer_like.protocol import ChatRequest
    from byzer_like.stream_lease import UNCLAIMED_S, StreamEnd

    deployed(echo_spec("r_lease", concurrency=1))
    client = Client("r_lease")
    router = ray.get_actor("r_lease", namespace="byzer_like")
    # the router grants the slot; the chunks come from the worker itself, and its slot is back when the stream ends
    lease = ray.get(router.open_stream.remote(None))
    assert client.stat()["state"] == [0]
    req = ChatRequest(messages=[{"role": "user", "content": "a b"}])
    chunks = [ray.get(ref) for ref in lease.worker.chat_stream.remote(req, lease.id)]
    assert "".join(c.text for c in chunks) == "a b" and client.stat()["state"] == [1]
    assert ray.get(router.close_stream.remote(lease.id, StreamEnd("ok"))) is False  # closing twice is harmless
    assert client.stat()["state"] == [1] and client.stat()["total_requests"] == [1]
    # a caller gone between the grant and the call: the lease is taken back
    ray.get(router.open_stream.remote(None))
    assert client.stat()["state"] == [0]
    assert wait_for(lambda: client.stat()["state"] == [1], timeout=UNCLAIMED_S * 2)
    assert client.chat("still serving").text == "still serving"


def test_stream_chunks_come_straight_from_the_worker(deployed):
    """A stream is read from its worker, not relayed: it outlives a kill of the router (Ray restarts the router)."""
    import ray

    deployed(echo_spec("r_direct", token_delay_s=0.1))
    client = Client("r_direct")
    words = " ".join(f"w{i}" for i in range(20))
    with client.stream(words) as stream:
        got = [next(stream).text, next(stream).text]
        ray.kill(ray.get_actor("r_direct", namespace="byzer_like"), no_restart=False)
        got += [c.text for c in stream]
    assert "".join(got) == words
    assert wait_for(lambda: client.chat("back").text == "back", timeout=30)
