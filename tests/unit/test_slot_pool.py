import asyncio

import pytest

from byzer_like.errors import BackendUnavailableError, OverloadedError
from byzer_like.policy import SlotPool, WorkerSlot


def make_pool(caps=(1,), max_queue=8, timeout_s=5.0) -> SlotPool:
    return SlotPool([WorkerSlot(index=i, capacity=c) for i, c in enumerate(caps)], max_queue=max_queue,
                    timeout_s=timeout_s, name="t")


def run(coro):
    return asyncio.run(coro)


def test_waiters_are_served_in_fifo_order():
    async def main():
        pool = make_pool()
        first = await pool.acquire()
        order = []

        async def waiter(tag):
            pos = await pool.acquire()
            order.append(tag)
            await asyncio.sleep(0)
            pool.release(pos, 0.0, True)

        tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert len(pool.waiters) == 5
        pool.release(first, 0.0, True)
        await asyncio.gather(*tasks)
        return order, pool

    order, pool = run(main())
    assert order == [0, 1, 2, 3, 4]
    assert pool.table[0].running == 0 and not pool.waiters
    assert pool.table[0].total_requests == 6


def test_full_queue_is_overloaded_at_once():
    async def main():
        pool = make_pool(max_queue=1)
        await pool.acquire()
        parked = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError) as info:
            await pool.acquire()
        parked.cancel()
        return info.value

    err = run(main())
    assert err.status_code == 429 and 0.1 <= err.retry_after <= 600 and "overloaded" in err.message


def test_zero_queue_rejects_when_busy():
    async def main():
        pool = make_pool(max_queue=0)
        await pool.acquire()
        with pytest.raises(OverloadedError):
            await pool.acquire()

    run(main())


def test_queue_wait_past_timeout_is_overloaded_and_leaves_the_queue():
    async def main():
        pool = make_pool(timeout_s=0.05)
        await pool.acquire()
        with pytest.raises(OverloadedError, match="no slot freed within"):
            await pool.acquire()
        return pool

    pool = run(main())
    assert not pool.waiters
    assert pool.table[0].running == 1


def test_cancelled_waiter_leaves_queue_and_next_waiter_gets_the_slot():
    async def main():
        pool = make_pool()
        first = await pool.acquire()
        a = asyncio.create_task(pool.acquire())
        b = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.sleep(0.01)
        assert len(pool.waiters) == 1
        pool.release(first, 0.0, True)
        pos = await b
        return pool, pos

    pool, pos = run(main())
    assert pos is pool.table[0] and pool.table[0].running == 1 and not pool.waiters


def test_waiter_cancelled_after_being_handed_a_slot_gives_it_back():
    async def main():
        pool = make_pool()
        first = await pool.acquire()
        a = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        pool.release(first, 0.0, True)  # hands the slot to `a` ...
        a.cancel()  # ... which gives up before it runs
        with pytest.raises(asyncio.CancelledError):
            await a
        return pool

    pool = run(main())
    assert pool.table[0].running == 0
    assert pool.table[0].total_requests == 1


def test_release_never_blocks_and_hands_off_directly():
    async def main():
        pool = make_pool(caps=(1, 1))
        p0 = await pool.acquire()
        await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        pool.release(p0, 0.0, True)  # sync call: returns at once
        assert p0.running == 1  # already booked for the waiter
        return await waiter, p0

    got, p0 = run(main())
    assert got == p0


def test_close_fails_waiters_and_refuses_new_requests():
    async def main():
        pool = make_pool()
        await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        pool.close("going away")
        with pytest.raises(BackendUnavailableError, match="going away"):
            await waiter
        with pytest.raises(BackendUnavailableError):
            await pool.acquire()

    run(main())


def test_errors_are_counted_on_release():
    async def main():
        pool = make_pool()
        pos = await pool.acquire()
        pool.release(pos, 0.2, ok=False)
        return pool

    pool = run(main())
    assert pool.table[0].errors == 1 and list(pool.table[0].latencies) == [0.2]


def test_coalesce_sends_first_at_once_merges_the_rest_and_flushes_at_the_end():
    from byzer_like.protocol import Chunk, Usage, coalesce

    async def source():
        for word in ["a", " b", " c", " d"]:
            yield Chunk(text=word)
        yield Chunk(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=4))

    async def main(interval):
        return [c async for c in coalesce(source(), interval)]

    slow = run(main(10.0))
    assert [c.text for c in slow] == ["a", " b c d"]  # first at once; the rest flushed by the final chunk
    assert slow[-1].finish_reason == "stop" and slow[-1].usage.completion_tokens == 4
    assert "".join(c.text for c in run(main(0.0))) == "a b c d" and len(run(main(0.0))) == 5


def test_retry_after_is_the_queues_expected_wait():
    async def main():
        pool = make_pool(caps=(1, 1), max_queue=3)
        for slot in pool.table:
            slot.latencies.extend([2.0, 2.0, 2.0])
        await pool.acquire()
        await pool.acquire()
        parked = [asyncio.create_task(pool.acquire()) for _ in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError) as info:
            await pool.acquire()
        for task in parked:
            task.cancel()
        return info.value.retry_after

    assert run(main()) == 4.0  # (3 queued + this one) x 2 s typical / 2 slots
