"""Engines through byzer_like vs the same engine in a bare Ray actor vs called directly, in one run, same prompts.

For each engine: single-stream tokens/s (median of --reps runs of --max-tokens tokens; greedy, EOS ignored where
the engine allows) three ways: directly in this process (the reference); in a bare Ray actor hosting the same
``Worker`` (same engine options, same stream coalescing) whose stream this process reads itself (the floor: Ray's
cost without ours, issue 13's target 5); through a 1-worker byzer_like deployment (client -> router for the slot ->
the worker's stream). For vLLM also the aggregate tokens/s of 8 concurrent requests. Runs never overlap, so they
do not compete for the cores: llama.cpp and transformers alternate rep by rep (machine drift hits all alike;
min/max reported); vLLM runs the direct engine first, then the deployment and the bare actor side by side (single
streams taking turns, then each one's 8-way aggregate while the other idles).

    BYZER_LIKE_CACHE=/tmp/bl_cache .venv/bin/python bench/engines.py --engines transformers,vllm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any, Awaitable, Callable

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def med_rate(runs: list[tuple[int, float]]) -> float:
    return statistics.median(tokens / secs for tokens, secs in runs)


async def timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = await fn()
    return tokens, time.perf_counter() - start


# -- direct engines ------------------------------------------------------------------------------------------------
async def direct_llama(args: argparse.Namespace) -> tuple[Callable[[], Awaitable[int]], Callable[[], None]]:
    from llama_cpp import Llama

    from byzer_like.models import bundled_smollm2_gguf

    llm = Llama(model_path=str(bundled_smollm2_gguf()), n_ctx=2048, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)

    async def one() -> int:
        out = llm.create_chat_completion(PROMPT, max_tokens=args.max_tokens, temperature=0)
        return out["usage"]["completion_tokens"]

    return one, llm.close


async def direct_transformers(args: argparse.Namespace) -> tuple[Callable[[], Awaitable[int]], Callable[[], None]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.hf_path)
    model = AutoModelForCausalLM.from_pretrained(args.hf_path, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    async def one() -> int:
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens,
                                 do_sample=False)
        return out.shape[1] - ids["input_ids"].shape[1]

    return one, lambda: None


async def direct_vllm(args: argparse.Namespace) -> dict[str, float]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    os.environ.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND=f"0-{args.threads - 1}",
                      OMP_NUM_THREADS=str(args.threads))
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=args.hf_path, dtype="float32", enforce_eager=True,
                                                       max_model_len=2048, max_num_seqs=32, disable_log_stats=True))
    ids = engine.get_tokenizer().apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    counter = iter(range(10**6))

    async def one() -> int:
        tokens = 0
        async for out in engine.generate({"prompt_token_ids": list(ids)}, params, f"b{next(counter)}"):
            tokens += len(out.outputs[0].token_ids)
        return tokens

    result = await measure(one, args)
    engine.shutdown()
    return result


async def measure(one: Callable[[], Awaitable[int]], args: argparse.Namespace,
                  single: bool = True) -> dict[str, float]:
    """Single-stream median (unless ``single`` is False) and aggregate at concurrency 8."""
    await one()  # warm-up
    out = {"single_tok_s": med_rate([await timed(one) for _ in range(args.reps)])} if single else {}

    async def eight() -> int:
        return sum(await asyncio.gather(*(one() for _ in range(8))))

    return {**out, "aggregate8_tok_s": med_rate([await timed(eight) for _ in range(args.reps)])}


# -- through byzer_like --------------------------------------------------------------------------------------------
async def deploy_engine(engine: str, args: argparse.Namespace) -> tuple[Callable[[], Awaitable[int]], Any, Any]:
    """Deploy a 1-worker alias of ``engine``; return a one-stream call, the undeploy coroutine and the spec."""
    from byzer_like import AsyncClient, DeploySpec
    from byzer_like.pool import deploy, undeploy
    from byzer_like.spec import BackendSpec, ResourceSpec

    path = None if engine == "llama_cpp" else args.hf_path
    kwargs = {"max_model_len": 2048} if engine != "llama_cpp" else {"n_ctx": 2048}
    spec = DeploySpec(alias=f"bench_{engine}", backend=BackendSpec(infer_backend=engine, model_path=path,
                                                                   engine_kwargs=kwargs),
                      resources=ResourceSpec(cpus_per_worker=args.threads))
    resolved = await asyncio.to_thread(deploy, spec, replace=True)
    client = AsyncClient(spec.alias, timeout=600)
    extra = _sampling(engine)

    async def one() -> int:
        usage = None
        async for chunk in client.stream(PROMPT, max_tokens=args.max_tokens, **extra):
            usage = chunk.usage or usage
        return usage.completion_tokens

    async def close() -> None:
        await asyncio.to_thread(undeploy, spec.alias)

    return one, close, resolved


async def bare_actor(engine: str, args: argparse.Namespace, resolved: Any) -> tuple[Callable[[], Awaitable[int]], Any]:
    """The same ``Worker`` (resolved spec: engine options, coalescing) in a bare Ray actor, its stream read here."""
    import ray

    from byzer_like.client import build_chat
    from byzer_like.worker import Worker

    actor = ray.remote(Worker).options(num_cpus=args.threads, max_concurrency=64).remote(resolved, 0)
    await actor.start.remote()
    req = build_chat(PROMPT, {"max_tokens": args.max_tokens, **_sampling(engine)})

    async def one() -> int:
        usage = None
        async for ref in actor.chat_stream.remote(req):
            usage = (await ref).usage or usage
        return usage.completion_tokens

    async def close() -> None:
        await actor.shutdown.remote()
        ray.kill(actor)

    return one, close


def _sampling(engine: str) -> dict[str, Any]:
    # NOTE: the same sampling as the direct calls (llama-cpp's create_chat_completion uses repeat_penalty 1.0).
    return ({"temperature": 0, "repetition_penalty": 1.0} if engine == "llama_cpp"
            else {"temperature": 0, "ignore_eos": True})


async def deployed(engine: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    """vLLM: the deployment and the bare actor (its resolved spec) side by side: single streams taking turns rep by
    rep, then each one's 8-way aggregate in turn (the other idle)."""
    one, close, resolved = await deploy_engine(engine, args)
    bare_one, bare_close = await bare_actor(engine, args, resolved)
    try:
        await one()  # warm-up
        await bare_one()
        runs: list[list[tuple[int, float]]] = [[], []]
        for _ in range(args.reps):
            runs[0].append(await timed(one))
            runs[1].append(await timed(bare_one))
        through, bare = _rates(runs[0]), _rates(runs[1])
        through["aggregate8_tok_s"] = (await measure(one, args, single=False))["aggregate8_tok_s"]
        bare["aggregate8_tok_s"] = (await measure(bare_one, args, single=False))["aggregate8_tok_s"]
        return through, bare
    finally:
        await bare_close()
        await close()


async def interleaved(engine: str, args: argparse.Namespace) -> tuple[dict[str, Any], ...]:
    """Direct, bare-actor and deployed single streams, taking turns rep by rep so machine drift hits all alike."""
    direct_one, direct_close = await DIRECT[engine](args)
    byzer_one, byzer_close, resolved = await deploy_engine(engine, args)
    bare_one, bare_close = await bare_actor(engine, args, resolved)
    paths = (direct_one, bare_one, byzer_one)
    try:
        for one in paths:  # warm-up
            await one()
        runs: list[list[tuple[int, float]]] = [[], [], []]
        for _ in range(args.reps):
            for i, one in enumerate(paths):
                runs[i].append(await timed(one))
    finally:
        direct_close()
        await bare_close()
        await byzer_close()
    return tuple(_rates(r) for r in runs)


def _rates(runs: list[tuple[int, float]]) -> dict[str, Any]:
    rates = [tokens / secs for tokens, secs in runs]
    return {"single_tok_s": statistics.median(rates), "single_min": min(rates), "single_max": max(rates)}


DIRECT: dict[str, Callable[[argparse.Namespace], Awaitable[Any]]] = {
    "llama_cpp": direct_llama, "transformers": direct_transformers, "vllm": direct_vllm}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for engine in args.engines.split(","):
        if engine == "vllm":  # NOTE: two vLLM engines at once would fight over the KV cache and cores: one by one
            direct = await DIRECT[engine](args)
            through, bare = await deployed(engine, args)
        else:
            direct, bare, through = await interleaved(engine, args)
        ratios = {k: round(through[k] / direct[k], 3) for k in direct if k.endswith("tok_s")}
        over_bare = {k: round(through[k] / bare[k], 3) for k in bare if k.endswith("tok_s")}
        results[engine] = {"direct": direct, "bare_actor": bare, "byzer_like": through, "ratio": ratios,
                           "ratio_over_bare_actor": over_bare}
        print(json.dumps({engine: results[engine]}), flush=True)
    return results


def main() -> None:
    import ray

    from byzer_like.prepare import prepare_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="llama_cpp,transformers,vllm")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.hf_path = str(prepare_model("smollm2-hf"))
    ray.init(address="local", namespace="byzer_like", num_cpus=max(4, args.threads), include_dashboard=False,
             log_to_driver=False)
    try:
        asyncio.run(run(args))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
