"""A pool that lives, measured: kill -9 of a worker under load (time to a ready replacement, request success rate)
and the autoscaler's reaction time (load starts -> the added worker is ready), on echo aliases.

    .venv/bin/python bench/pool_life.py --reps 5 --out bench/results/pool_life.json

Starts its own local Ray cluster (stopped at the end). Writes one JSON object (per repetition, and median/min/max)
to --out and stdout (Ray's raylet also prints a line on stdout for every killed worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import threading
import time

import ray

from byzer_like import Client, DeploySpec
from byzer_like.errors import ByzerLikeError
from byzer_like.pool import deploy, undeploy


def echo(alias: str, workers: int, concurrency: int, scaling: dict | None = None, **options: float) -> DeploySpec:
    return DeploySpec.model_validate({
        "alias": alias, "backend": {"model_type": "custom/echo", "engine_kwargs": options},
        "resources": {"num_workers": workers, "worker_concurrency": concurrency}, "scaling": scaling or {}})


def kill_under_load(rep: int, requests: int = 1500, threads: int = 8, kill_at: int = 300) -> dict:
    alias = f"bench_kill_{rep}"
    deploy(echo(alias, 2, 4), replace=True)
    client = Client(alias)
    done, failed, marks = [0], [0], {}
    lock = threading.Lock()

    def run(n: int) -> None:
        for i in range(n):
            try:
                client.chat(f"hello {i}")
            except ByzerLikeError:
                failed[0] += 1
            with lock:
                done[0] += 1
                if done[0] == kill_at:
                    marks["pid"] = client.stat()["pid"][0]
                    os.kill(marks["pid"], signal.SIGKILL)
                    marks["killed"] = time.perf_counter()

    pool = [threading.Thread(target=run, args=(requests // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    ready_after = None
    while ready_after is None:
        if "killed" in marks:
            st = client.stat()
            if st["ready_workers"] == 2 and marks["pid"] not in st["pid"]:
                ready_after = time.perf_counter() - marks["killed"]
        time.sleep(0.02)
    for t in pool:
        t.join()
    undeploy(alias)
    return {"replacement_ready_s": round(ready_after, 3), "requests": done[0],
            "success_rate": round(1 - failed[0] / done[0], 5)}


def scale_up_reaction(rep: int) -> dict:
    alias = f"bench_scale_{rep}"
    deploy(echo(alias, 1, 1, {"min_workers": 1, "max_workers": 2, "max_idle_time_s": 600}, token_delay_s=0.05),
           replace=True)
    client = Client(alias)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            client.chat("one two three four")

    start = time.perf_counter()
    pool = [threading.Thread(target=load) for _ in range(3)]
    for t in pool:
        t.start()
    while client.stat()["ready_workers"] < 2:
        time.sleep(0.02)
    reaction = time.perf_counter() - start
    stop.set()
    for t in pool:
        t.join()
    undeploy(alias)
    return {"scale_up_ready_s": round(reaction, 3)}


def summary(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    ray.init(address="local", namespace="byzer_like", logging_level=logging.ERROR, log_to_driver=False)
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:
        kills = [kill_under_load(i) for i in range(args.reps)]
        scales = [scale_up_reaction(i) for i in range(args.reps)]
    finally:
        ray.shutdown()
    text = json.dumps({"kill_under_load": kills, "replacement_ready_s": summary(kills, "replacement_ready_s"),
                       "success_rate": summary(kills, "success_rate"), "scale_up": scales,
                       "scale_up_ready_s": summary(scales, "scale_up_ready_s")}, indent=2)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
