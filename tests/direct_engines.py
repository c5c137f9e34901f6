"""Each engine called directly, the way its own users call it, for the "same answer as the engine" tests.

A tiny model's greedy answer depends on the CPU (llama.cpp is compiled for the build machine; SIMD paths round
differently), so no test asserts what the model says. What byzer_like guarantees is that an alias answers exactly what
the engine answers when called directly with the same prompt, sampling and seed on the same machine. These helpers
are that direct call: llama-cpp-python's ``Llama.create_chat_completion``, transformers' ``generate`` and vLLM's
``LLM.chat``, each with the sampling a deployment uses when a request leaves a parameter unset (the backend's
documented ``default_*`` options: repetition penalty 1.1, top_p 0.95, ...).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class Answer:
    """What an engine answered."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def messages_for(text: str, system: str | None = None) -> list[dict[str, str]]:
    """The messages the CLI and clients send for ``text``."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def cut_at(text: str, stop: str) -> str:
    """``text`` up to the first occurrence of ``stop`` (what a stop string must leave)."""
    return text[: text.index(stop)]


def stop_word(text: str) -> str:
    """A word from the middle of ``text`` (at least 3 letters, not at the start) to use as a stop string."""
    words = [w.strip(".,;:!?\"'()") for w in text.split()]
    candidates = [w for w in words[2:] if len(w) >= 3 and text.index(w) > 0]
    assert candidates, f"the engine's answer is too short to pick a stop word from: {text!r}"
    return candidates[len(candidates) // 2]


def assert_gateway_answers_like(direct: Answer, base_url: str, alias: str, *, max_tokens: int) -> None:
    """Through the gateway (the real ``openai`` SDK), unary and streamed, the alias answers exactly ``direct``."""
    import openai

    oai = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    messages = messages_for(QUESTION)
    resp = oai.chat.completions.create(model=alias, temperature=0, max_tokens=max_tokens, messages=messages)
    assert resp.choices[0].message.content == direct.text
    assert resp.choices[0].finish_reason == direct.finish_reason
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (direct.prompt_tokens,
                                                                        direct.completion_tokens)
    stream = oai.chat.completions.create(model=alias, temperature=0, max_tokens=max_tokens, stream=True,
                                         messages=messages)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == direct.text


# -- llama.cpp ----------------------------------------------------------------------------------------------------
@functools.cache
def _llama(model_path: str, n_threads: int, n_ctx: int) -> Any:
    from llama_cpp import Llama

    # NOTE: chat_format pins the GGUF's own Jinja template (llama-cpp-python may otherwise guess a built-in format).
    return Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, n_batch=512,
                 verbose=False, chat_format="chat_template.default")


def llama_chat(model_path: str, text: str, *, max_tokens: int, stop: list[str] | None = None,
               n_threads: int = 1, system: str | None = None) -> Answer:
    """llama-cpp-python's own chat completion, greedy (temperature 0), with a deployment's default sampling."""
    from byzer_like.backends.llama_cpp import LlamaCppOptions

    opts = LlamaCppOptions()
    llm = _llama(model_path, n_threads, opts.n_ctx)
    llm.reset()  # a fresh prompt evaluation, as on a worker that has not seen this prompt
    out = llm.create_chat_completion(messages=messages_for(text, system), temperature=0, max_tokens=max_tokens,
                                     stop=stop, top_p=opts.default_top_p, top_k=opts.default_top_k,
                                     min_p=opts.default_min_p, repeat_penalty=opts.default_repetition_penalty)
    choice = out["choices"][0]
    return Answer(choice["message"]["content"] or "", out["usage"]["prompt_tokens"],
                  out["usage"]["completion_tokens"], choice["finish_reason"])


# -- transformers -------------------------------------------------------------------------------------------------
@functools.cache
def _hf(model_path: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoTokenizer.from_pretrained(model_path),
            AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval())


def transformers_chat(model_path: str, text: str, *, max_tokens: int, num_threads: int = 1) -> Answer:
    """transformers' ``generate``, greedy, with a deployment's default repetition penalty."""
    import torch

    from byzer_like.backends.transformers import TransformersOptions

    opts = TransformersOptions()
    tokenizer, model = _hf(model_path)
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)  # the worker's threads (cpus_per_worker): float sums follow the split
    try:
        enc = tokenizer.apply_chat_template(messages_for(text), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens,
                                 repetition_penalty=opts.default_repetition_penalty,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    finally:
        torch.set_num_threads(before)
    prompt_len = enc["input_ids"].shape[1]
    new = out[0, prompt_len:].tolist()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    finish = "stop" if new and new[-1] in eos_ids else "length"
    return Answer(tokenizer.decode(new, skip_special_tokens=True), prompt_len, len(new), finish)


# -- vLLM ---------------------------------------------------------------------------------------------------------
_VLLM_SCRIPT = r"""
import json, sys
from vllm import LLM, SamplingParams
args = json.loads(sys.argv[1])
llm = LLM(**args["engine"])
outs = []
for q in args["questions"]:
    res = llm.chat([{"role": "user", "content": q["text"]}], SamplingParams(**q["sampling"]), use_tqdm=False)[0]
    o = res.outputs[0]
    outs.append({"text": o.text, "prompt_tokens": len(res.prompt_token_ids), "completion_tokens": len(o.token_ids),
                 "finish_reason": o.finish_reason})
print("RESULT " + json.dumps(outs), flush=True)
"""


def vllm_chat_many(model_path: str, questions: list[dict[str, Any]], *, max_model_len: int,
                   max_num_seqs: int = 32, timeout: float = 900) -> list[Answer]:
    """vLLM's offline ``LLM.chat`` in a fresh process (its engine owns the process), greedy, one prompt at a time.

    Args:
        model_path: The HF folder.
        questions: ``{"text", "max_tokens", "stop"?}`` each.
        max_model_len: As deployed.
        max_num_seqs: As deployed (the worker's concurrency).
        timeout: Seconds for engine start and all answers.
    """
    from byzer_like.backends.vllm import VllmOptions

    opts = VllmOptions()
    cores = os.cpu_count() or 1
    # the CPU engine settings a CPU worker uses (docs/engines.md): float32, eager, 1 GiB KV cache, all cores bound
    engine = {"model": model_path, "max_model_len": max_model_len, "enforce_eager": True, "dtype": "float32",
              "max_num_seqs": max_num_seqs, "disable_log_stats": True}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(opts.cpu_kvcache_space_gb),
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}", "OMP_NUM_THREADS": str(cores),
           "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1"}
    payload = {"engine": engine, "questions": [
        {"text": q["text"], "sampling": {"temperature": 0, "max_tokens": q["max_tokens"], "top_p": opts.default_top_p,
                                         "repetition_penalty": opts.default_repetition_penalty,
                                         "stop": q.get("stop")}} for q in questions]}
    proc = subprocess.run([sys.executable, "-c", _VLLM_SCRIPT, json.dumps(payload)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return [Answer(**row) for row in json.loads(lines[-1][len("RESULT "):])]
