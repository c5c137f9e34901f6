"""byzerllm 0.1.223 (the project we replace) vs byzer_like, side by side: one run, one Ray cluster, one upstream.

Both proxy the same local OpenAI-protocol upstream (``tests/upstreams/openai_server.py``, its own process):
  byzerllm    ``ByzerLLM().deploy(pretrained_model_type="saas/openai", ...)``, called with ``llm.chat_oai`` (sync);
  byzer_like  a ``saas/openai`` alias, called with ``byzer_like.Client(alias).chat`` (sync);
  echo        a byzer_like ``custom/echo`` alias (no upstream): our own floor, in the same harness.
Same worker shape on each: 2 workers, ``--worker-concurrency`` requests per worker, 0.01 CPU and 0 GPU per worker.
Same request: byzerllm always sends max_tokens=4000, temperature=0.9, top_p=0.7; byzer_like is asked the same.
After a warm-up, ``--rounds`` interleaved rounds; per round and system: p50 of ``--n1`` sequential chats
(concurrency 1), and req/s of ``--n8`` chats from 8 Python threads sharing one client. Reported: median [min-max]
over the rounds, the ratios byzer_like/byzerllm (req/s, target >= 1.8; p50, target <= 0.55), and JSON.

One connection serves both: ``ray.init(namespace="default")``, the namespace byzerllm's own ``connect_cluster``
uses and where its ``ray.get_actor(udf_name)`` looks (its UDF master and stream-server actors live there);
byzer_like names its own namespace ("byzer_like") in every actor call, so it works from any job namespace.

Setup (byzerllm goes in its own folder; the project's .venv is not touched: ray, pydantic, openai, numpy, ...
all come from .venv; byzerllm's imports need only these extra packages):

    .venv/bin/pip install --no-deps --target /tmp/byzerllm_pkg byzerllm==0.1.223 pyjava==0.6.21 \\
        contextlib2 pandas pytz tzdata pyarrow

byzerllm 0.1.223 imports ``hex_to_binary`` from ``ray._private.utils``, which Ray 2.60 moved to
``ray._common.utils``; this script sets the old name back at run time before importing byzerllm (no file of
byzerllm is edited). It also puts the folder on PYTHONPATH before ``ray.init`` so that the local cluster's workers
(byzerllm's UDF workers unpickle byzerllm code) import it too.

Usage:

    .venv/bin/python bench/byzerllm_side_by_side.py --rounds 5 --n1 200 --n8 1600 --out /tmp/side_by_side.json
    .venv/bin/python bench/byzerllm_side_by_side.py --rounds 1 --n1 30 --n8 200   # smoke run

``--byzerllm-pkg`` (or BYZERLLM_PKG) names another folder than /tmp/byzerllm_pkg.
"""

from __future__ import annotations

import argparse
import binascii
import json
import logging
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.saas_overhead import KEY, spread, start_upstream  # noqa: E402

MODEL = "gpt-4o"
PROMPT = "tell me a short story about ray"
SAMPLING = {"max_tokens": 4000, "temperature": 0.9, "top_p": 0.7}  # what byzerllm's saas/openai always sends
THREADS = 8
BZ_ALIAS, BL_ALIAS, ECHO_ALIAS = "side_byzerllm_saas", "side_byzer_like_saas", "side_byzer_like_echo"
SYSTEMS = ("byzerllm", "byzer_like", "echo")


def use_byzerllm_pkg(pkg: Path) -> None:
    """Make byzerllm importable here and in the Ray workers, and restore the Ray name it imports."""
    if not (pkg / "byzerllm").is_dir():
        sys.exit(f"byzerllm is not installed in {pkg}; see this script's docstring for the setup command")
    sys.path.append(str(pkg))  # after .venv's site-packages: nothing of .venv is shadowed
    # The local cluster that ray.init starts inherits this environment, so its workers see the folder too.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(pkg)) if p)
    import ray._private.utils as private_utils

    if not hasattr(private_utils, "hex_to_binary"):  # byzerllm.utils.ray_utils imports it from here (Ray < 2.5x)
        try:
            from ray._common.utils import hex_to_binary
        except ImportError:
            hex_to_binary = binascii.unhexlify
        private_utils.hex_to_binary = hex_to_binary


def one_round(call: Callable[[], str], n1: int, n8: int) -> tuple[float, float]:
    """(p50 ms over n1 sequential calls, req/s of n8 calls from THREADS threads)."""
    lat = []
    for _ in range(n1):
        start = time.perf_counter()
        call()
        lat.append((time.perf_counter() - start) * 1000)
    left = iter(range(n8))
    lock = threading.Lock()

    def runner() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            call()

    with ThreadPoolExecutor(THREADS) as pool:
        start = time.perf_counter()
        for fut in [pool.submit(runner) for _ in range(THREADS)]:
            fut.result()
        elapsed = time.perf_counter() - start
    return statistics.median(lat), n8 / elapsed


def main(args: argparse.Namespace) -> dict[str, Any]:  # noqa: C901, PLR0915 - one linear script
    use_byzerllm_pkg(args.byzerllm_pkg)
    import ray

    proc, base_url = start_upstream()
    deployed_bl: list[str] = []
    llm = None
    try:
        ray.init(address="local", namespace="default", num_cpus=8, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        import byzerllm
        from byzerllm.utils.client import ByzerLLM

        from byzer_like import Client, DeploySpec, deploy
        from byzer_like.spec import BackendSpec, ResourceSpec

        resources = ResourceSpec(num_workers=2, worker_concurrency=args.worker_concurrency, cpus_per_worker=0.01)
        deploy(DeploySpec(alias=BL_ALIAS, resources=resources, backend=BackendSpec(
            model_type="saas/openai", engine_kwargs={"model": MODEL, "api_key": KEY, "base_url": base_url})))
        deployed_bl.append(BL_ALIAS)
        deploy(DeploySpec(alias=ECHO_ALIAS, resources=resources, backend=BackendSpec(model_type="custom/echo")))
        deployed_bl.append(ECHO_ALIAS)

        llm = ByzerLLM()
        llm.setup_gpus_per_worker(0).setup_cpus_per_worker(0.01).setup_num_workers(2)
        llm.setup_worker_concurrency(args.worker_concurrency)
        llm.deploy(model_path="", pretrained_model_type="saas/openai", udf_name=BZ_ALIAS,
                   infer_params={"saas.api_key": KEY, "saas.base_url": base_url, "saas.model": MODEL})

        bl_client, echo_client = Client(BL_ALIAS), Client(ECHO_ALIAS)
        conversation = [{"role": "user", "content": PROMPT}]

        def call_byzerllm() -> str:
            return llm.chat_oai(model=BZ_ALIAS, conversations=[dict(conversation[0])])[0].output

        def call_byzer_like() -> str:
            return bl_client.chat(conversation, **SAMPLING).text

        def call_echo() -> str:
            return echo_client.chat(conversation, **SAMPLING).text

        calls = {"byzerllm": call_byzerllm, "byzer_like": call_byzer_like, "echo": call_echo}
        a, b = call_byzerllm(), call_byzer_like()
        if a != b:
            raise RuntimeError(f"the two proxies answer differently: byzerllm {a!r} vs byzer_like {b!r}")
        for call in calls.values():  # warm-up: connections, actor handles, both workers
            one_round(call, 50, 10 * THREADS)
        p50: dict[str, list[float]] = {k: [] for k in SYSTEMS}
        rps: dict[str, list[float]] = {k: [] for k in SYSTEMS}
        for r in range(args.rounds):
            for name, call in calls.items():
                lat, thr = one_round(call, args.n1, args.n8)
                p50[name].append(lat)
                rps[name].append(thr)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} p50 {p50[k][-1]:.2f} ms, {rps[k][-1]:.0f} req/s" for k in SYSTEMS), flush=True)
        versions = {"byzerllm": getattr(byzerllm, "__version__", "0.1.223"), "ray": ray.__version__}
    finally:
        if ray.is_initialized():
            from byzer_like import undeploy

            for alias in deployed_bl:
                try:
                    undeploy(alias, force=True)
                except Exception as exc:  # noqa: BLE001 - cleanup goes on
                    print(f"undeploy {alias}: {exc}", file=sys.stderr)
            if llm is not None:
                try:
                    llm.undeploy(BZ_ALIAS, force=True)  # kills its UDF master; ray.shutdown ends the rest
                except Exception as exc:  # noqa: BLE001
                    print(f"byzerllm undeploy: {exc}", file=sys.stderr)
            ray.shutdown()
        proc.kill()
        proc.wait()

    print(f"\n| system | p50 ms @1, median [min-max] | req/s @{THREADS} threads, median [min-max] |\n|---|---|---|")
    for name in SYSTEMS:
        print(f"| {name} | {spread(p50[name], '.2f')} | {spread(rps[name], '.0f')} |")
    m = {k: statistics.median(v) for k, v in p50.items()}
    r = {k: statistics.median(v) for k, v in rps.items()}
    rps_ratio, p50_ratio = r["byzer_like"] / r["byzerllm"], m["byzer_like"] / m["byzerllm"]
    rps_met, p50_met = rps_ratio >= 1.8, p50_ratio <= 0.55
    print(f"req/s ratio byzer_like/byzerllm: {rps_ratio:.2f} (target >= 1.8: {'met' if rps_met else 'NOT met'})")
    print(f"p50 ratio byzer_like/byzerllm: {p50_ratio:.2f} (target <= 0.55: {'met' if p50_met else 'NOT met'})")
    report = {
        "p50_ms": p50, "rps": rps,
        "median": {k: {"p50_ms": m[k], "rps": r[k]} for k in SYSTEMS},
        "ratios": {"rps_byzer_like_over_byzerllm": rps_ratio, "p50_byzer_like_over_byzerllm": p50_ratio},
        "targets": {"rps_ratio_min": 1.8, "p50_ratio_max": 0.55,
                    "rps_met": rps_met, "p50_met": p50_met},
        "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "threads": THREADS, "num_workers": 2, **versions},
    }
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (each system once per round).")
    parser.add_argument("--n1", type=int, default=200, help="Sequential requests per round for p50.")
    parser.add_argument("--n8", type=int, default=1600, help="Requests per round from 8 threads for req/s.")
    parser.add_argument("--worker-concurrency", type=int, default=64,
                        help="Requests one worker runs at once, on both systems.")
    parser.add_argument("--byzerllm-pkg", type=Path, default=Path(os.environ.get("BYZERLLM_PKG", "/tmp/byzerllm_pkg")),
                        help="The --target folder byzerllm 0.1.223 was installed in.")
    parser.add_argument("--out", type=Path, help="Also write the JSON report here.")
    main(parser.parse_args())
