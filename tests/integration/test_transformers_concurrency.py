"""transformers with worker_concurrency > 1: requests are serialised (generate() has no continuous batching), and
serialising is safe — every concurrent answer is whole. Measured by counting overlap, not by timing thresholds."""

import asyncio
import time

import pytest

from byzer_like import AsyncClient, Client
from byzer_like.spec import BackendSpec, DeploySpec, ResourceSpec
from tests.integration._engine_models import prepared

pytestmark = pytest.mark.slow


def test_concurrent_requests_on_one_transformers_worker_take_turns(deployed):
    spec = DeploySpec(alias="tf_conc", backend=BackendSpec(infer_backend="transformers",
                                                           model_path=prepared("tiny-random")),
                      resources=ResourceSpec(num_workers=1, worker_concurrency=3))
    deployed(spec)
    windows: list[tuple[float, float]] = []

    async def one(i: int) -> int:
        first = last = None
        tokens = 0
        async for chunk in AsyncClient("tf_conc").stream(f"story {i}", max_tokens=12, ignore_eos=True,
                                                         temperature=0):
            if chunk.text:
                now = time.perf_counter()
                first = first or now
                last = now
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        windows.append((first, last))
        return tokens

    async def run() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(3)))

    assert asyncio.run(run()) == [12, 12, 12]  # every answer whole: the engine was never shared mid-sequence
    events = sorted([(a, +1) for a, _ in windows] + [(b, -1) for _, b in windows])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak == 1, f"{peak} transformers generations overlapped; the backend should take them in turn"
    stat = Client("tf_conc").stat()
    assert stat["total_requests"] == [3] and stat["state"] == [3]
