"""The LRU load-balancing policy and the worker table it reads, as plain data: unit-testable without Ray.

byzerllm's rule, kept: pick the least recently dispatched worker that has a free slot. Ties go to the worker with
more free slots, then to the lower index, so the choice is deterministic.

Example:
    >>> table = [WorkerSlot(index=0, capacity=1), WorkerSlot(index=1, capacity=1)]
    >>> pick_worker(table)
    0
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

from byzer_like.errors import BackendUnavailableError, OverloadedError

LATENCY_WINDOW = 1024
# A worker's life: starting -> ready -> draining -> (removed); ready/starting -> dead -> (replaced by a new worker).
STARTING, READY, DRAINING, DEAD = "starting", "ready", "draining", "dead"


@dataclass
class WorkerSlot:
    """One worker's row in the router's table."""

    index: int
    capacity: int
    running: int = 0
    total_requests: int = 0
    errors: int = 0
    last_dispatch: float = -math.inf  # monotonic clock; -inf = never dispatched
    last_work_time: float = field(default_factory=time.time)  # wall clock of the last dispatch (or creation)
    phase: str = READY
    handle: Any = field(default=None, repr=False)  # the worker actor (the router's business; opaque here)
    restarts: int = 0  # how many workers died before this one took their place
    idle_since: float = field(default_factory=time.monotonic)  # monotonic: when ``running`` last fell to 0
    where: dict = field(default_factory=dict)  # pid, node
    progress: dict = field(default_factory=lambda: {"phase": "queued"})  # while starting: the worker's start phase
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_seconds: float = 0.0  # summed request durations: completion tokens / busy seconds = tokens/s

    @property
    def healthy(self) -> bool:
        """Alive and serving (a draining worker still finishes its requests)."""
        return self.phase in (READY, DRAINING)

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.phase = READY if value else DEAD

    @property
    def free(self) -> int:
        """Free concurrency slots (byzerllm's ``state``)."""
        return self.capacity - self.running

    def take(self, now: float) -> None:
        """Book one request onto this worker."""
        self.running += 1
        self.total_requests += 1
        self.last_dispatch = now
        self.last_work_time = time.time()

    def count_tokens(self, usage: object) -> None:
        """Add a finished request's token usage (any object with prompt/completion token counts)."""
        self.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
        self.completion_tokens += getattr(usage, "completion_tokens", 0) or 0

    def give_back(self, seconds: float, ok: bool) -> None:
        """Return the slot of a finished request and record how it went."""
        self.running -= 1
        if self.running == 0:
            self.idle_since = time.monotonic()
        self.latencies.append(seconds)
        self.busy_seconds += seconds
        if not ok:
            self.errors += 1


def pick_worker(table: Sequence[WorkerSlot]) -> int | None:
    """The LRU choice: least recently dispatched ready worker with a free slot.

    Args:
        table: The worker table.

    Returns:
        The chosen worker's position in ``table``, or None when every slot is taken.
    """
    best: WorkerSlot | None = None
    best_pos = None
    for pos, slot in enumerate(table):
        if slot.phase != READY or slot.free <= 0:
            continue
        if best is None or (slot.last_dispatch, -slot.free, slot.index) < (best.last_dispatch, -best.free, best.index):
            best, best_pos = slot, pos
    return best_pos


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def table_stat(table: Sequence[WorkerSlot], capacity: int, queue_length: int) -> dict:
    """Byzerllm's ``stat`` JSON (same keys and meanings) plus queue length, running, errors and latencies."""
    now = time.time()
    return {
        "total_workers": len(table),
        "busy_workers": sum(1 for s in table if s.running > 0),
        "idle_workers": sum(1 for s in table if s.running == 0),
        "load_balance_strategy": "lru",
        "total_requests": [s.total_requests for s in table],
        "state": [s.free for s in table],
        "worker_max_concurrency": capacity,
        "workers_last_work_time": [f"{now - s.last_work_time:.2f}s" for s in table],
        "queue_length": queue_length,
        "running_requests": [s.running for s in table],
        "errors": [s.errors for s in table],
        "healthy": [s.healthy for s in table],
        "phase": ["restarting" if s.phase == STARTING and s.restarts else s.phase for s in table],
        "restarts": [s.restarts for s in table],
        "worker_index": [s.index for s in table],
        "pid": [s.where.get("pid") for s in table],
        "node": [s.where.get("node") for s in table],
        "latency_ms": [_latency_ms(s.latencies) for s in table],
        "prompt_tokens": [s.prompt_tokens for s in table],
        "completion_tokens": [s.completion_tokens for s in table],
        "tokens_per_s": [round(s.completion_tokens / s.busy_seconds, 1) if s.busy_seconds else 0.0 for s in table],
    }


def _latency_ms(values: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}": (None if (v := percentile(values, q)) is None else round(v * 1000, 2)) for q in (50, 90, 99)}


class SlotPool:
    """The worker table plus a bounded FIFO queue of waiters; no Ray, no locks.

    ``acquire`` books a slot on the LRU worker or parks a future in the queue; ``release`` returns a slot and hands
    it straight to the oldest waiter, so the release path never waits and a queued request is never overtaken.

    Args:
        table: The workers' rows.
        max_queue: Requests that may wait; more is an ``OverloadedError``.
        timeout_s: Longest wait in the queue before an ``OverloadedError``.
        name: The alias, for messages.

    Example:
        >>> pool = SlotPool([WorkerSlot(index=0, capacity=1)], max_queue=8, timeout_s=5, name="smol")
        >>> pos = await pool.acquire()  # doctest: +SKIP
        >>> pool.release(pos, seconds=0.1, ok=True)  # doctest: +SKIP
    """

    def __init__(self, table: list[WorkerSlot], *, max_queue: int, timeout_s: float, name: str) -> None:
        self.table = table
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.name = name
        self.waiters: deque[asyncio.Future[int]] = deque()
        self.closed_reason: str | None = None

    @property
    def slots(self) -> int:
        """Slots over all workers."""
        return sum(s.capacity for s in self.table)

    async def acquire(self) -> WorkerSlot:
        """Book a slot; wait in the queue when all are taken (or while no worker is ready yet).

        Returns:
            The chosen worker's row (hand it back to ``release``).

        Raises:
            OverloadedError: the queue is full, or no slot freed within ``timeout_s``.
            BackendUnavailableError: the pool is closing, or cannot serve (``fail_waiters``).
        """
        if self.closed_reason:
            raise BackendUnavailableError(self.closed_reason)
        pos = pick_worker(self.table)
        if pos is not None:
            slot = self.table[pos]
            slot.take(time.monotonic())
            return slot
        if len(self.waiters) >= self.max_queue:
            raise OverloadedError(f"'{self.name}' is overloaded: all {self.slots} slots busy and {len(self.waiters)} "
                                  "requests queued; retry later or deploy more workers",
                                  retry_after=self.expected_wait())
        fut: asyncio.Future[WorkerSlot] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            done, _ = await asyncio.wait((fut,), timeout=self.timeout_s)
        except BaseException:
            self._abandon(fut)
            raise
        if not done:
            self._abandon(fut)
            raise OverloadedError(f"'{self.name}' is overloaded: no slot freed within {self.timeout_s:g}s; retry "
                                  "later or deploy more workers", retry_after=self.expected_wait())
        return fut.result()

    def expected_wait(self) -> float:
        """Seconds a new request can expect to wait: the queue ahead of it times a typical request, over the slots."""
        recent = [v for slot in self.table for v in list(slot.latencies)[-64:]]
        typical = percentile(recent, 50) or 1.0
        slots = max(1, sum(s.capacity for s in self.table if s.phase == READY))
        return round(min(600.0, max(0.1, (len(self.waiters) + 1) * typical / slots)), 2)

    def release(self, slot: WorkerSlot, seconds: float, ok: bool) -> None:
        """Return a finished request's slot and hand it to the oldest waiter."""
        slot.give_back(seconds, ok)
        self.wake()

    def close(self, reason: str) -> None:
        """Refuse new requests and fail every waiter with ``reason``."""
        self.closed_reason = reason
        self.fail_waiters(reason)

    def fail_waiters(self, reason: str) -> None:
        """Fail every waiting request with ``reason`` (the pool cannot serve them)."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(BackendUnavailableError(reason))

    def _abandon(self, fut: asyncio.Future[WorkerSlot]) -> None:
        """A waiter gave up: hand back a slot it was already given, or leave the queue."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            slot = fut.result()
            slot.running -= 1
            slot.total_requests -= 1
            self.wake()
            return
        fut.cancel()
        if fut in self.waiters:
            self.waiters.remove(fut)

    def wake(self) -> None:
        """Hand free slots to waiters, oldest first (after a release, or when a worker becomes ready)."""
        while self.waiters:
            pos = pick_worker(self.table)
            if pos is None:
                return
            fut = self.waiters.popleft()
            if fut.done():
                continue
            self.table[pos].take(time.monotonic())
            fut.set_result(self.table[pos])
