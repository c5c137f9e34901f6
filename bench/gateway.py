"""Gateway overhead: a chat to a no-op (echo) alias through the gateway, vs the Python client, vs a bare Ray Serve
app returning the same body, vs a bare FastAPI app under uvicorn. One run, bounded request counts.

Paths (all answer ``POST /v1/chat/completions`` with the same chat.completion JSON):
- gateway:  byzer_like's gateway on Ray Serve (FastAPI ingress) -> AsyncClient -> router actor -> echo worker
- gateway_uvicorn: the same gateway app under uvicorn in a plain Ray actor (``serve --server uvicorn``)
- client:   ``AsyncClient(alias).chat`` in this process (no HTTP) -> router -> worker
- serve:    a bare Ray Serve deployment (Starlette request in, fixed JSON out; no Ray call behind it)
- uvicorn:  a bare FastAPI app under uvicorn (one process) returning the fixed JSON

Paths take turns round by round (``--rounds``); reports per path and concurrency (1 and 32) the median and
min-max over rounds of requests/s and p50 latency. Serve-level options are read when the cluster and replicas start,
so each variant is one invocation:

    .venv/bin/python bench/gateway.py                                       # Serve defaults
    .venv/bin/python bench/gateway.py --same-loop                           # replicas run user code on their main loop
    .venv/bin/python bench/gateway.py --serve-env RAY_SERVE_THROUGHPUT_OPTIMIZED=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

ALIAS = "bench_gw_echo"
MESSAGE = "hello gateway bench"
UVICORN_APP = """
import json, sys
from fastapi import FastAPI, Request
from fastapi.responses import Response
BODY = sys.argv[2].encode()
app = FastAPI()
@app.post("/v1/chat/completions")
async def chat(request: Request):
    await request.body()
    return Response(BODY, media_type="application/json")
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stats(latencies: list[float], wall: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {"rps": round(len(lat) / wall, 1), "p50_ms": round(1000 * statistics.median(lat), 2),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2), "n": len(lat)}


async def _drive(call: Callable[[], Awaitable[Any]], concurrency: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _stats(latencies, time.perf_counter() - start)


def _http_call(client: Any, url: str, body: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        resp = await client.post(url, json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:200]}")
    return call


def _runtime_env(same_loop: bool) -> dict[str, Any] | None:
    return {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}} if same_loop else None


def _start_gateway(port: int, same_loop: bool) -> str:
    from ray import serve

    from byzer_like.gateway.serve_app import build_serve_app
    from byzer_like.gateway.settings import GatewaySettings

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_serve_app(GatewaySettings(port=port), runtime_env=_runtime_env(same_loop)), name="gateway",
              route_prefix="/")
    return f"http://127.0.0.1:{port}"


def _start_bare(same_loop: bool, body: bytes) -> None:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    env = _runtime_env(same_loop)

    @serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0, **({"runtime_env": env}
                                                                                       if env else {})})
    class Bare:
        async def __call__(self, request: Request) -> Response:
            await request.body()
            return Response(body, media_type="application/json")

    serve.run(Bare.bind(), name="bare", route_prefix="/bare")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from byzer_like import AsyncClient

    chat = {"model": ALIAS, "messages": [{"role": "user", "content": MESSAGE}]}
    port, uport = _free_port(), _free_port()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        base = _start_gateway(port, args.same_loop)
        body = (await http.post(f"{base}/v1/chat/completions", json=chat)).content
        _start_bare(args.same_loop, body)
        server = subprocess.Popen([sys.executable, "-c", UVICORN_APP, str(uport), body.decode()])
        try:
            await _wait(http, f"http://127.0.0.1:{uport}/v1/chat/completions", chat)
            client = AsyncClient(ALIAS)
            ubase = _start_uvicorn_actor(_free_port())
            await _wait(http, f"{ubase}/v1/chat/completions", chat)
            paths: dict[str, Callable[[], Awaitable[Any]]] = {
                "gateway": _http_call(http, f"{base}/v1/chat/completions", chat),
                "gateway_uvicorn": _http_call(http, f"{ubase}/v1/chat/completions", chat),
                "client": lambda: client.chat(MESSAGE),
                "serve": _http_call(http, f"{base}/bare/v1/chat/completions", chat),
                "uvicorn": _http_call(http, f"http://127.0.0.1:{uport}/v1/chat/completions", chat),
            }
            rounds: dict[str, list[dict[str, float]]] = {}
            for call in paths.values():  # warm-up
                await _drive(call, 32, 100)
            for _ in range(args.rounds):
                for concurrency, total in ((1, args.requests_c1), (32, args.requests_c32)):
                    for name, call in paths.items():
                        one = await _drive(call, concurrency, total)
                        rounds.setdefault(f"{name}@{concurrency}", []).append(one)
                        print(name, concurrency, one, file=sys.stderr)
            return {key: _over_rounds(values) for key, values in rounds.items()}
        finally:
            from byzer_like.gateway.actor_server import stop_actors

            stop_actors()
            server.terminate()
            server.wait()


def _start_uvicorn_actor(port: int) -> str:
    from byzer_like.gateway.actor_server import start_actors, url_of
    from byzer_like.gateway.settings import GatewaySettings

    settings = GatewaySettings(port=port)
    start_actors(settings)
    return url_of(settings)


def _over_rounds(values: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("rps", "p50_ms"):
        series = [v[key] for v in values]
        out[key] = round(statistics.median(series), 2)
        out[f"{key}_min"], out[f"{key}_max"] = round(min(series), 2), round(max(series), 2)
    return out


async def _wait(http: Any, url: str, body: dict[str, Any]) -> None:
    for _ in range(100):
        try:
            if (await http.post(url, json=body)).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for conc in (1, 32):
        sv, cl = results[f"serve@{conc}"], results[f"client@{conc}"]
        for name in ("gateway", "gateway_uvicorn"):
            gw = results[f"{name}@{conc}"]
            out[f"{name}_vs_serve_rps@{conc}"] = round(gw["rps"] / sv["rps"], 2)
            out[f"{name}_minus_serve_p50_ms@{conc}"] = round(gw["p50_ms"] - sv["p50_ms"], 2)
            # issue 13 target 4: p50 <= bare Serve + the router path (the Python client) + 1 ms
            out[f"{name}_minus_serve_and_client_p50_ms@{conc}"] = round(gw["p50_ms"] - sv["p50_ms"] - cl["p50_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-c1", type=int, default=200, help="Requests timed at concurrency 1 per path.")
    parser.add_argument("--requests-c32", type=int, default=800, help="Requests timed at concurrency 32 per path.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds; paths take turns within each.")
    parser.add_argument("--same-loop", action="store_true",
                        help="Serve replicas run user code on their main event loop (RAY_SERVE_RUN_USER_CODE_IN_"
                             "SEPARATE_THREAD=0).")
    parser.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                        help="Environment for the Ray cluster this bench starts (Serve feature flags).")
    args = parser.parse_args()
    for item in args.serve_env:
        key, _, value = item.partition("=")
        os.environ[key] = value

    import ray
    from ray import serve

    from byzer_like import DeploySpec
    from byzer_like.pool import deploy

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", namespace="byzer_like", num_cpus=4, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    deploy(DeploySpec.model_validate({
        "alias": ALIAS, "backend": {"model_type": "custom/echo"},
        "resources": {"num_workers": 1, "worker_concurrency": 64, "cpus_per_worker": 0.01},
        "queue": {"max_queue": 4096}}))
    try:
        results = asyncio.run(_run(args))
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps({"variant": {"same_loop": args.same_loop, "serve_env": args.serve_env},
                      "results": results, "summary": _summary(results)}, indent=2))


if __name__ == "__main__":
    main()
