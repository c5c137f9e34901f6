import math

from byzer_like.policy import WorkerSlot, percentile, pick_worker, table_stat


def slots(*caps: int) -> list[WorkerSlot]:
    return [WorkerSlot(index=i, capacity=c) for i, c in enumerate(caps)]


def test_never_dispatched_tie_goes_to_most_free_then_lowest_index():
    table = slots(1, 3, 3)
    assert pick_worker(table) == 1
    table = slots(2, 2)
    assert pick_worker(table) == 0


def test_least_recently_dispatched_with_a_free_slot_wins():
    table = slots(1, 1, 1)
    table[0].take(now=3.0)
    table[0].give_back(0.1, ok=True)
    table[1].take(now=1.0)
    table[1].give_back(0.1, ok=True)
    table[2].take(now=2.0)
    table[2].give_back(0.1, ok=True)
    assert pick_worker(table) == 1


def test_full_workers_are_skipped_even_if_least_recent():
    table = slots(1, 1)
    table[0].take(now=1.0)  # busy, least recent
    table[1].take(now=2.0)
    table[1].give_back(0.1, ok=True)
    assert pick_worker(table) == 1


def test_all_slots_taken_returns_none():
    table = slots(1, 2)
    table[0].take(now=1.0)
    table[1].take(now=2.0)
    table[1].take(now=3.0)
    assert pick_worker(table) is None


def test_unhealthy_workers_are_never_picked():
    table = slots(1, 1)
    table[0].healthy = False
    assert pick_worker(table) == 1
    table[1].healthy = False
    assert pick_worker(table) is None


def test_sequential_requests_alternate_evenly():
    table = slots(1, 1, 1)
    now = 0.0
    for _ in range(9):
        pos = pick_worker(table)
        now += 1
        table[pos].take(now)
        table[pos].give_back(0.01, ok=True)
    assert [s.total_requests for s in table] == [3, 3, 3]


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5.0], 99) == 5.0


def test_table_stat_keeps_byzerllm_keys_and_meanings():
    table = slots(2, 2)
    table[0].take(now=1.0)
    table[1].take(now=2.0)
    table[1].give_back(0.5, ok=False)
    stat = table_stat(table, capacity=2, queue_length=3)
    assert stat["total_workers"] == 2
    assert stat["busy_workers"] == 1 and stat["idle_workers"] == 1
    assert stat["state"] == [1, 2]  # free slots
    assert stat["total_requests"] == [1, 1]
    assert stat["worker_max_concurrency"] == 2
    assert stat["load_balance_strategy"] == "lru"
    assert all(t.endswith("s") for t in stat["workers_last_work_time"])
    assert stat["queue_length"] == 3
    assert stat["running_requests"] == [1, 0]
    assert stat["errors"] == [0, 1]
    assert stat["latency_ms"][1]["p50"] == 500.0
    assert stat["latency_ms"][0]["p50"] is None
    assert math.isclose(float(stat["workers_last_work_time"][0][:-1]), 0.0, abs_tol=5.0)


def test_token_counts_and_rate_per_worker():
    from byzer_like.protocol import Usage

    table = slots(1, 1)
    table[0].take(now=1.0)
    table[0].count_tokens(Usage(prompt_tokens=10, completion_tokens=40))
    table[0].give_back(2.0, ok=True)
    stat = table_stat(table, capacity=1, queue_length=0)
    assert stat["prompt_tokens"] == [10, 0] and stat["completion_tokens"] == [40, 0]
    assert stat["tokens_per_s"] == [20.0, 0.0]
