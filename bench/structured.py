"""The cost of constrained decoding: tokens/s with a JSON schema (response_format json_schema, strict) vs without,
on llama.cpp and vLLM, in one run.

Each engine gets a 1-worker deployment (SmolLM2-135M: the bundled GGUF for llama.cpp, the prepared HF folder for
vLLM). Rounds interleave the two modes on the same prompts (plain, schema, plain, schema, ...), so machine drift
hits both alike; each request is unary through the client (client -> router -> worker) and its rate is
completion tokens / wall seconds. Reported per engine and mode: median tokens/s with min-max over all requests,
and the mean completion length (a schema answer usually ends earlier). Engines run one after the other, never at
once. Run it on an idle machine:

    BYZER_LIKE_CACHE=/tmp/bl_cache .venv/bin/python bench/structured.py --engines llama_cpp,vllm --rounds 5
    .venv/bin/python bench/structured.py --engines llama_cpp --rounds 1 --max-tokens 32   # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

PROMPTS = [f"Describe the city of {c} in detail." for c in ("Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Rome")]
SCHEMA = {"type": "object", "additionalProperties": False,
          "required": ["name", "country", "population_millions", "climate", "landmarks", "summary"],
          "properties": {"name": {"type": "string"}, "country": {"type": "string"},
                         "population_millions": {"type": "number"},
                         "climate": {"type": "string", "enum": ["hot", "mild", "cold"]},
                         "landmarks": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                         "summary": {"type": "string"}}}
FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}


def spec_for(engine: str, cpus: float) -> Any:
    from byzer_like import DeploySpec

    backend: dict[str, Any] = {"infer_backend": engine}
    if engine == "vllm":
        from byzer_like.prepare import default_chat_model

        backend.update(model_path=str(default_chat_model("vllm")), engine_kwargs={"max_model_len": 2048})
    return DeploySpec.model_validate({"alias": f"bench_struct_{engine}", "backend": backend,
                                      "resources": {"num_workers": 1, "cpus_per_worker": cpus}})


def run_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds on one deployment; per mode the rates (tok/s) and completion lengths."""
    from byzer_like import Client, deploy, undeploy

    spec = spec_for(engine, args.cpus)
    deploy(spec, replace=True)
    try:
        client = Client(spec.alias, timeout=900)
        client.chat("warm up", max_tokens=8, temperature=0)
        client.chat("warm up", max_tokens=8, temperature=0, response_format=FORMAT)  # grammar compile/caches
        rows: dict[str, list[tuple[int, float]]] = {"plain": [], "schema": []}
        for _ in range(args.rounds):
            for prompt in PROMPTS[: args.prompts]:
                for mode in ("plain", "schema"):
                    extra = {"response_format": FORMAT} if mode == "schema" else {}
                    start = time.perf_counter()
                    answer = client.chat(prompt, max_tokens=args.max_tokens, temperature=0, **extra)
                    rows[mode].append((answer.usage.completion_tokens, time.perf_counter() - start))
                    if mode == "schema" and answer.finish_reason == "stop":
                        json.loads(answer.text)  # a constrained answer that finished must parse
        return {mode: summarize(runs) for mode, runs in rows.items()}
    finally:
        undeploy(spec.alias, force=True)


def wait_for_free_cpus(cpus: float, timeout_s: float = 60) -> None:
    """An undeployed worker's CPUs return to the cluster a moment after its actor is killed."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.5)


def summarize(runs: list[tuple[int, float]]) -> dict[str, float]:
    rates = [tokens / secs for tokens, secs in runs if secs > 0]
    return {"median_tok_s": round(statistics.median(rates), 2), "min_tok_s": round(min(rates), 2),
            "max_tok_s": round(max(rates), 2), "mean_tokens": round(statistics.mean(t for t, _ in runs), 1),
            "requests": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="llama_cpp,vllm", help="Comma-separated: llama_cpp, vllm.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds over the prompts.")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="Prompts per round.")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens of every request.")
    parser.add_argument("--cpus", type=float, default=2, help="cpus_per_worker (llama.cpp threads follow it).")
    args = parser.parse_args()
    import ray

    # NOTE: our own short-lived cluster (stopped at the end), with room for one worker of each engine at a time
    ray.init(address="local", namespace="byzer_like", num_cpus=max(2, int(args.cpus) * 2), include_dashboard=False,
             log_to_driver=False)
    results = {}
    try:
        for engine in args.engines.split(","):
            results[engine] = run_engine(engine, args)
            print(engine, json.dumps(results[engine]), flush=True)
            wait_for_free_cpus(args.cpus)
    finally:
        ray.shutdown()
    print(json.dumps({"config": vars(args), "results": results}, indent=2))
    for engine, modes in results.items():
        plain, schema = modes["plain"]["median_tok_s"], modes["schema"]["median_tok_s"]
        print(f"{engine}: plain {plain} tok/s, schema {schema} tok/s (x{schema / plain:.2f})")


if __name__ == "__main__":
    main()
