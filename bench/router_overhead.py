"""Router overhead: a no-op (echo) backend called through the alias's router vs the same call on a bare actor.

All paths run in one process, interleaved round by round so machine noise hits them alike:
- bare:    a Worker actor hosting the echo backend, called directly (``worker.chat.remote(req)``)
- forward: a minimal async actor that only forwards to a bare Worker (the cost of a second Ray hop, no bookkeeping)
- router:  the alias's Router in front of its Worker (``AsyncClient(alias).chat(...)``: client -> router -> worker)

and, for issue 13's target 3, a ``--stream-words``-chunk stream (one word per chunk) read from the bare Worker actor
directly (``worker.chat_stream.remote(req)``) vs through the alias (``AsyncClient(alias).stream(...)``).

Reports p50/p99 latency at concurrency 1 and requests/s at concurrency 32 (median and spread over rounds), and the
router's added cost. Usage:

    .venv/bin/python bench/router_overhead.py [--rounds 5] [--calls 200] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time

import ray

from byzer_like import AsyncClient, DeploySpec
from byzer_like.pool import deploy, undeploy
from byzer_like.protocol import ChatRequest, Message
from byzer_like.worker import Worker

ALIAS = "bench_noop"
CONCURRENCY = 32


def spec() -> DeploySpec:
    return DeploySpec.model_validate({
        "alias": ALIAS, "backend": {"model_type": "custom/echo"},
        "resources": {"num_workers": 1, "worker_concurrency": 64, "cpus_per_worker": 0.01},
        "queue": {"max_queue": 4096}})


@ray.remote
class Forwarder:
    """The least any router can do: one more actor hop."""

    def __init__(self, worker):
        self.worker = worker

    async def chat(self, req):
        return await self.worker.chat.remote(req)


async def latencies(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def throughput(call, total: int, concurrency: int) -> float:
    per_task = total // concurrency

    async def loop():
        for _ in range(per_task):
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    resolved = deploy(spec(), replace=True)
    bare = ray.remote(Worker).options(max_concurrency=64 + 8, num_cpus=0.01).remote(resolved, 0)
    await bare.start.remote()
    target = ray.remote(Worker).options(max_concurrency=64 + 8, num_cpus=0.01).remote(resolved, 0)
    await target.start.remote()
    forwarder = Forwarder.options(max_concurrency=1000, num_cpus=0).remote(target)
    client = AsyncClient(ALIAS)
    req = ChatRequest(messages=[Message(role="user", content="ping")])

    async def call_bare():
        return await bare.chat.remote(req)

    async def call_forward():
        return await forwarder.chat.remote(req)

    async def call_router():
        return await client.chat("ping")

    words = " ".join(f"w{i}" for i in range(args.stream_words))
    stream_req = ChatRequest(messages=[Message(role="user", content=words)])

    async def stream_bare():
        n = 0
        async for ref in bare.chat_stream.remote(stream_req):
            await ref
            n += 1
        assert n == args.stream_words + 1, n  # one chunk per word, then the final one

    async def stream_router():
        n = 0
        async for _ in client.stream(words):
            n += 1
        assert n == args.stream_words + 1, n

    streams = {"stream_bare": stream_bare, "stream_router": stream_router}
    for call in streams.values():
        await latencies(call, 5)
    stream_times = {name: [] for name in streams}
    paths = {"bare": call_bare, "forward": call_forward, "router": call_router}
    for call in paths.values():  # warm up both paths
        await latencies(call, 50)
        await throughput(call, 320, CONCURRENCY)
    lat = {name: [] for name in paths}
    p50s = {name: [] for name in paths}
    rps = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, call in paths.items():
            values = await latencies(call, args.calls)
            lat[name].extend(values)
            p50s[name].append(pct(values, 50))
            rps[name].append(await throughput(call, args.burst, CONCURRENCY))
        for name, call in streams.items():
            stream_times[name].append(statistics.median(await latencies(call, args.streams)))
    for actor in (bare, target, forwarder):
        ray.kill(actor)
    undeploy(ALIAS)
    result = {}
    for name in paths:
        result[name] = {
            "p50_ms": round(pct(lat[name], 50) * 1000, 3), "p99_ms": round(pct(lat[name], 99) * 1000, 3),
            "p50_ms_per_round": [round(v * 1000, 3) for v in p50s[name]],
            "rps_c32_median": round(statistics.median(rps[name]), 1),
            "rps_c32_min": round(min(rps[name]), 1), "rps_c32_max": round(max(rps[name]), 1)}
    for name, values in stream_times.items():
        result[name] = {"median_ms": round(statistics.median(values) * 1000, 2),
                        "min_ms": round(min(values) * 1000, 2), "max_ms": round(max(values) * 1000, 2)}
    result["stream_ratio_router_over_bare"] = round(result["stream_router"]["median_ms"]
                                                    / result["stream_bare"]["median_ms"], 3)
    result["added_p50_ms"] = round(result["router"]["p50_ms"] - result["bare"]["p50_ms"], 3)
    result["router_over_forward_p50_ms"] = round(result["router"]["p50_ms"] - result["forward"]["p50_ms"], 3)
    result["rps_ratio_router_over_bare"] = round(result["router"]["rps_c32_median"] / result["bare"]["rps_c32_median"],
                                                 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per round (concurrency 1)")
    parser.add_argument("--burst", type=int, default=2048, help="calls per round at concurrency 32")
    parser.add_argument("--stream-words", type=int, default=200, help="chunks per stream")
    parser.add_argument("--streams", type=int, default=20, help="streams per path per round (median per round)")
    args = parser.parse_args()
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", namespace="byzer_like", include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    print()
    for name in ("bare", "forward", "router"):
        r = result[name]
        print(f"{name:<8} c=1 p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms | "
              f"c=32 {r['rps_c32_median']:6.0f} req/s [{r['rps_c32_min']:.0f}-{r['rps_c32_max']:.0f}]")
    print(f"router adds {result['added_p50_ms']:.2f} ms at p50 over bare (target <= 2 ms), "
          f"{result['router_over_forward_p50_ms']:.2f} ms over a bare forwarding hop; "
          f"router/bare req/s ratio {result['rps_ratio_router_over_bare']:.2f} (target >= 500 req/s)")
    for name in ("stream_bare", "stream_router"):
        r = result[name]
        print(f"{name:<14} {args.stream_words}-chunk stream {r['median_ms']:7.2f} ms "
              f"[{r['min_ms']:.2f}-{r['max_ms']:.2f}]")
    print(f"stream through the alias / read from the worker: {result['stream_ratio_router_over_bare']:.2f}x "
          "(target <= 1.2x)")
    ray.shutdown()


if __name__ == "__main__":
    main()
