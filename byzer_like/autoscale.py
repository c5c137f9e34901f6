"""The autoscaling policy as a pure function of load samples: no Ray, no clocks of its own, unit-tested on shapes.

The signal is made for LLM serving, not only request counts: demand is running plus *queued* requests (a queue is
the clearest sign a pool is short), measured against ``target_ongoing_requests`` per worker (default: the worker's
slots). Scaling up adds ``scale_up_step`` workers once demand has exceeded capacity for ``upscale_delay_s``; a
request that waits while no worker exists triggers a cold start at once (scale from zero). Scaling down removes only
workers idle for ``max_idle_time_s`` (seed 003's rule), never below ``min_workers`` nor below what the current demand
needs, and not within ``downscale_delay_s`` of the last scale-up.

Example:
    >>> state = ScalerState()
    >>> decide(ScalingSpec(min_workers=0, max_workers=3), 1, 1,
    ...        LoadSample(workers=0, ready=0, running=0, queued=2, idle_s=()), state, now=0.0).desired
    1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from byzer_like.spec import ScalingSpec


@dataclass(frozen=True)
class LoadSample:
    """What the router sees at one moment.

    Args:
        workers: Workers that count as capacity: ready or starting (not draining, not dead).
        ready: Of those, the ones serving.
        running: Requests running over all workers.
        queued: Requests waiting for a slot.
        idle_s: Per ready worker, seconds since it last ran a request (0 while it runs one).
    """

    workers: int
    ready: int
    running: int
    queued: int
    idle_s: tuple[float, ...]


@dataclass
class ScalerState:
    """What the policy remembers between samples."""

    above_since: float | None = None
    last_up: float = -math.inf


@dataclass(frozen=True)
class Decision:
    """The worker count to move to, and why (kept in ``stat``'s events)."""

    desired: int
    reason: str


def decide(scaling: ScalingSpec, concurrency: int, num_workers: int, sample: LoadSample, state: ScalerState,
           now: float) -> Decision | None:
    """The worker count the pool should move to now, or None to stay.

    Args:
        scaling: The alias's scaling settings.
        concurrency: Slots per worker.
        num_workers: The deployed ``num_workers`` (the bounds' default).
        sample: The current load.
        state: The policy's memory (updated in place).
        now: A monotonic clock reading.
    """
    low, high = scaling.bounds(num_workers)
    current = sample.workers
    if current < low:
        return Decision(low, f"fewer workers than min_workers ({current} < {low})")
    if current > high:
        return Decision(high, f"more workers than max_workers ({current} > {high})")
    target = scaling.target_ongoing_requests or concurrency
    demand = sample.running + sample.queued
    needed = math.ceil(demand / target) if demand else 0
    if sample.queued and current == 0:
        state.above_since, state.last_up = None, now
        return Decision(min(high, max(low, scaling.scale_up_step)),
                        f"cold start: {sample.queued} request(s) waiting and no worker")
    if needed > current and current < high:
        state.above_since = now if state.above_since is None else state.above_since
        if now - state.above_since < scaling.upscale_delay_s:
            return None
        state.above_since, state.last_up = None, now
        return Decision(min(high, current + scaling.scale_up_step),
                        f"demand {demand} (running {sample.running}, queued {sample.queued}) > target {target:g} "
                        f"x {current} worker(s)")
    state.above_since = None
    if current <= low or now - state.last_up < scaling.downscale_delay_s or sample.ready < current:
        return None
    idle = sum(1 for t in sample.idle_s if t >= scaling.max_idle_time_s)
    removable = min(idle, current - max(low, needed))
    if removable <= 0:
        return None
    return Decision(current - removable, f"{removable} worker(s) idle for {scaling.max_idle_time_s:g}s or more")
