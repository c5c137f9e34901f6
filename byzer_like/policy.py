"""The LRU load-balancing policy and the worker table it reads, as plain data: unit-testable without Ray.

byzerllm's rule, kept: pick the least recently dispatched worker that has a free slot. Ties go to the worker with
more free slots, then to the lower index, so the choice is deterministic.

Example:
    >>> table = [WorkerSlot(index=0, capacity=1), WorkerSlot(index=1, capacity=1)]
    >>> pick_worker(table)
    0
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

LATENCY_WINDOW = 1024


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
    healthy: bool = True
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

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

    def give_back(self, seconds: float, ok: bool) -> None:
        """Return the slot of a finished request and record how it went."""
        self.running -= 1
        self.latencies.append(seconds)
        if not ok:
            self.errors += 1


def pick_worker(table: Sequence[WorkerSlot]) -> int | None:
    """The LRU choice: least recently dispatched healthy worker with a free slot.

    Args:
        table: The worker table.

    Returns:
        The chosen worker's position in ``table``, or None when every slot is taken.
    """
    best: WorkerSlot | None = None
    best_pos = None
    for pos, slot in enumerate(table):
        if not slot.healthy or slot.free <= 0:
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
    """byzerllm's ``stat`` JSON (same keys and meanings) plus queue length, running, errors and latencies."""
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
        "latency_ms": [_latency_ms(s.latencies) for s in table],
    }


def _latency_ms(values: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}": (None if (v := percentile(values, q)) is None else round(v * 1000, 2)) for q in (50, 90, 99)}
