"""SaaS proxy overhead: a ``saas/openai`` alias vs its floors, interleaved round by round in one run.

Four paths, each asked the same unary chat (the whole answer in one piece):
  direct  the ``openai`` SDK (its default httpx transport) calling a local OpenAI-protocol upstream (its own
          process) itself; ``direct_aiohttp`` the same on the SDK's aiohttp transport (what our workers use);
  echo    an alias on ``custom/echo`` (client -> router -> worker, no upstream): our own cost;
  saas    an alias on ``saas/openai`` -> the same upstream, through the same SDK inside the worker.
Both aliases have 2 workers on one local Ray cluster started here. Per round and path: p50 over ``--n1`` sequential
calls, and req/s of ``--n32`` calls at concurrency 32. Reported: median [min-max] over the rounds, and issue 13's
target 1: saas p50 <= echo p50 + direct p50 + 0.5 ms, and saas req/s @32 >= 0.8x echo's.

    .venv/bin/python bench/saas_overhead.py --rounds 5 --n1 200 --n32 1600
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def one_round(call: Callable[[], Awaitable[str]], n1: int, n32: int) -> tuple[float, float]:
    """(p50 ms at concurrency 1, req/s at concurrency 32)."""
    lat = []
    for _ in range(n1):
        start = time.perf_counter()
        await call()
        lat.append((time.perf_counter() - start) * 1000)
    queue = iter(range(n32))

    async def runner() -> None:
        for _ in queue:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(32)))
    return statistics.median(lat), n32 / (time.perf_counter() - start)


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


async def main(args: argparse.Namespace) -> None:  # noqa: C901 - one linear script
    import openai
    import ray

    from byzer_like import DeploySpec, deploy, undeploy
    from byzer_like.client import AsyncClient
    from byzer_like.spec import BackendSpec, ResourceSpec

    proc, base_url = start_upstream()
    ray.init(address="local", namespace="byzer_like", num_cpus=8, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    try:
        sdk = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
        sdk_aio = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0,
                                     http_client=openai.DefaultAioHttpClient())

        async def direct() -> str:
            out = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return out.choices[0].message.content or ""

        async def direct_aiohttp() -> str:
            out = await sdk_aio.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return out.choices[0].message.content or ""

        deploy(DeploySpec(alias="bench_echo", resources=ResourceSpec(num_workers=2),
                          backend=BackendSpec(model_type="custom/echo")))
        deploy(DeploySpec(alias="bench_saas", resources=ResourceSpec(num_workers=2),
                          backend=BackendSpec(model_type="saas/openai", engine_kwargs={
                              "model": "gpt-4o", "api_key": KEY, "base_url": base_url})))
        echo_client, saas_client = AsyncClient("bench_echo"), AsyncClient("bench_saas")

        async def echo() -> str:
            return (await echo_client.chat(MESSAGES)).text

        async def saas() -> str:
            return (await saas_client.chat(MESSAGES)).text

        paths = {"direct": direct, "direct_aiohttp": direct_aiohttp, "echo": echo, "saas": saas}
        assert await direct() == await saas()
        for call in paths.values():  # warm-up: connections, actor handles
            for _ in range(50):
                await call()
        p50: dict[str, list[float]] = {k: [] for k in paths}
        rps: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for name, call in paths.items():
                a, b = await one_round(call, args.n1, args.n32)
                p50[name].append(a)
                rps[name].append(b)
        undeploy("bench_echo", force=True)
        undeploy("bench_saas", force=True)
        await sdk_aio.close()
    finally:
        ray.shutdown()
        proc.kill()
    print("| path | p50 ms @1, median [min-max] | req/s @32, median [min-max] |\n|---|---|---|")
    for name in paths:
        print(f"| {name} | {spread(p50[name], '.2f')} | {spread(rps[name], '.0f')} |")
    m = {k: statistics.median(v) for k, v in p50.items()}
    r = {k: statistics.median(v) for k, v in rps.items()}
    for floor in ("direct", "direct_aiohttp"):
        budget = m["echo"] + m[floor] + 0.5
        print(f"target 1a vs {floor}: saas p50 {m['saas']:.2f} ms <= echo + {floor} + 0.5 = {budget:.2f} ms: "
              f"{'met' if m['saas'] <= budget else 'NOT met'} (saas adds "
              f"{m['saas'] - m['echo'] - m[floor]:+.2f} ms over the two floors)")
    print(f"target 1b: saas req/s @32 {r['saas']:.0f} >= 0.8 x echo {r['echo']:.0f}: "
          f"{'met' if r['saas'] >= 0.8 * r['echo'] else 'NOT met'} ({r['saas'] / r['echo']:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps({"p50_ms": p50, "rps": rps, "config": vars(args) | {"out": str(args.out)}}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (each path once per round).")
    parser.add_argument("--n1", type=int, default=200, help="Sequential requests per round for p50.")
    parser.add_argument("--n32", type=int, default=1600, help="Requests per round at concurrency 32 for req/s.")
    parser.add_argument("--out", type=Path, help="Also write the raw figures as JSON here.")
    asyncio.run(main(parser.parse_args()))
