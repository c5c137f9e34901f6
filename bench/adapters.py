"""LoRA adapters: tokens/s with an adapter vs without on each local engine (same alias, same run), and the cost of a
hot add.

For each engine one 1-worker alias serves the base model and the demo adapter (``smollm2-lora-demo``, rank 8 on all
attention and MLP projections). Rounds alternate base and adapter requests (greedy, ``--max-tokens`` tokens, the
same prompt), so drift hits both alike; the ratio adapter/base is reported per round (median, min-max). A hot add is
timed twice: cold (first add: llama.cpp converts the PEFT folder to a GGUF LoRA) and warm (the conversion cached),
while base requests keep running on the alias (none may fail).

    .venv/bin/python bench/adapters.py --engines llama_cpp,transformers,vllm --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROMPT = "Write a short story about a robot who learns to paint."


def spec_for(engine: str, hf_path: str) -> Any:
    from byzer_like import DeploySpec

    kwargs: dict[str, Any] = {"max_model_len": 1024, "enable_lora": True} if engine == "vllm" else {}
    return DeploySpec.model_validate({
        "alias": f"bench_lora_{engine}",
        "backend": {"infer_backend": engine, "model_path": None if engine == "llama_cpp" else hf_path,
                    "engine_kwargs": kwargs},
        "resources": {"num_workers": 1, "cpus_per_worker": 1}})


def rate(client: Any, adapter: str | None, max_tokens: int) -> float:
    answer = client.chat(PROMPT, adapter=adapter, temperature=0, max_tokens=max_tokens)
    return answer.usage.completion_tokens / answer.timings.total_s


def timed_add(client: Any, source: str) -> dict[str, Any]:
    """Add the adapter while base requests run; the add's seconds and the base requests' outcomes."""
    stop, ok, failed = threading.Event(), [0], []

    def traffic() -> None:
        while not stop.is_set():
            try:
                client.chat("hi", temperature=0, max_tokens=4)
                ok[0] += 1
            except Exception as exc:  # noqa: BLE001 - counted, reported
                failed.append(repr(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    start = time.perf_counter()
    client.add_adapter("banana", source)
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    return {"seconds": round(seconds, 3), "base_requests_ok": ok[0], "base_requests_failed": len(failed)}


def bench_engine(engine: str, args: argparse.Namespace, hf_path: str, adapter: str) -> dict[str, Any]:
    from byzer_like import Client
    from byzer_like.pool import deploy, undeploy

    spec = spec_for(engine, hf_path)
    deploy(spec, replace=True)
    try:
        client = Client(spec.alias)
        rate(client, None, args.max_tokens)  # warm-up
        cold = timed_add(client, adapter)
        client.remove_adapter("banana")
        warm = timed_add(client, adapter)
        rate(client, "banana", args.max_tokens)  # warm-up with the adapter
        base, lora = [], []
        for _ in range(args.rounds):
            base.append(rate(client, None, args.max_tokens))
            lora.append(rate(client, "banana", args.max_tokens))
        ratios = [b and a / b for a, b in zip(lora, base, strict=True)]
        return {"engine": engine, "base_tok_s": round(statistics.median(base), 1),
                "adapter_tok_s": round(statistics.median(lora), 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                "hot_add_cold": cold, "hot_add_warm": warm}
    finally:
        undeploy(spec.alias, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="llama_cpp,transformers,vllm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args()

    import ray

    from byzer_like.prepare import prepare_model

    cache = Path(tempfile.mkdtemp(prefix="bench_lora_cache_"))
    os.environ["BYZER_LIKE_CACHE"] = str(cache)  # NOTE: workers inherit it: the first add converts for real
    hf_path = str(prepare_model("smollm2-hf", cache=cache))
    adapter = str(prepare_model("smollm2-lora-demo", cache=cache))
    ray.init(address="local", namespace="byzer_like", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        results = [bench_engine(e, args, hf_path, adapter) for e in args.engines.split(",")]
    finally:
        ray.shutdown()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("| engine | base tok/s | adapter tok/s | adapter/base (median, min-max) | hot add cold | hot add warm |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['base_tok_s']} | {r['adapter_tok_s']} | {r['ratio_median']} "
              f"({r['ratio_min']}-{r['ratio_max']}) | {r['hot_add_cold']['seconds']} s | "
              f"{r['hot_add_warm']['seconds']} s |")


if __name__ == "__main__":
    main()
