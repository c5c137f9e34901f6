"""SaaS proxy overhead: the openai SDK calling a local OpenAI-protocol upstream directly vs through byzer_like.

One run: p50/p99 latency at concurrency 1 and requests/s at concurrency 32, both paths, same streamed request
(``stream=True`` + usage, collected). The upstream runs in its own process; byzer_like uses one alias with 2
workers on a local Ray cluster started here.

    .venv/bin/python bench/saas_overhead.py --n1 200 --n32 1600
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY = "sk-bench-key-000000"
MESSAGES = [{"role": "user", "content": "tell me a short story about ray"}]


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.upstreams.openai_server", "--api-key", KEY], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip() + "/v1"  # type: ignore[union-attr]


async def measure(call: Callable[[], Awaitable[str]], n1: int, n32: int) -> dict[str, float]:
    for _ in range(20):  # warm-up: connections, actor handles
        await call()
    lat = []
    for _ in range(n1):
        start = time.perf_counter()
        await call()
        lat.append((time.perf_counter() - start) * 1000)
    lat.sort()
    queue = iter(range(n32))

    async def runner() -> None:
        for _ in queue:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(32)))
    rps = n32 / (time.perf_counter() - start)
    return {"p50": statistics.median(lat), "p99": lat[int(len(lat) * 0.99) - 1], "rps": rps}


async def main(args: argparse.Namespace) -> None:
    import openai
    import ray

    from byzer_like import DeploySpec, deploy, undeploy
    from byzer_like.client import AsyncClient
    from byzer_like.spec import BackendSpec, ResourceSpec

    proc, base_url = start_upstream()
    try:
        sdk = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)

        async def direct() -> str:
            stream = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                       stream_options={"include_usage": True})
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        ray.init(address="local", namespace="byzer_like", num_cpus=8, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        deploy(DeploySpec(alias="bench_saas", resources=ResourceSpec(num_workers=2),
                          backend=BackendSpec(model_type="saas/openai", engine_kwargs={
                              "model": "gpt-4o", "api_key": KEY, "base_url": base_url})))
        client = AsyncClient("bench_saas")

        async def through() -> str:
            return (await client.chat(MESSAGES)).text

        assert await direct() == await through()
        d = await measure(direct, args.n1, args.n32)
        b = await measure(through, args.n1, args.n32)
        undeploy("bench_saas", force=True)
    finally:
        proc.kill()
    print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'req/s @32':>11}")
    print(f"{'openai SDK direct':<22}{d['p50']:>9.2f}{d['p99']:>9.2f}{d['rps']:>11.0f}")
    print(f"{'through byzer_like':<22}{b['p50']:>9.2f}{b['p99']:>9.2f}{b['rps']:>11.0f}")
    print(f"added p50 {b['p50'] - d['p50']:+.2f} ms, added p99 {b['p99'] - d['p99']:+.2f} ms, "
          f"p50 ratio {b['p50'] / d['p50']:.2f}x, throughput ratio {b['rps'] / d['rps']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n1", type=int, default=200, help="Sequential requests for p50/p99.")
    parser.add_argument("--n32", type=int, default=1600, help="Requests at concurrency 32 for req/s.")
    asyncio.run(main(parser.parse_args()))
