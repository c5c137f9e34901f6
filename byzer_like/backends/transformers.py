"""transformers backend: causal LMs from a Hugging Face folder or a GGUF file, on CPU (or GPU with device_map).

``model.generate`` runs one batch at a time and has no continuous batching, so a worker serialises generations
with a lock whatever ``worker_concurrency`` says (requests wait their turn; the router counts them as running).
Generation runs in a thread; a streamer pushes tokens into the actor's event loop (no polling), and a cancelled
stream stops ``generate`` at the next token through a stopping criterion.

Example:
    byzer-like deploy --model smol_tf --infer_backend transformers --model_path ~/.cache/byzer_like/SmolLM2-135M-Instruct-hf
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any, AsyncIterator, ClassVar

from pydantic import Field

from byzer_like.backends.base import Backend, EngineOptions, SamplingDefaults
from byzer_like.backends.constrained import TOOL_OPEN, Constraint, constraint_for, prompt_messages, read_answer
from byzer_like.backends.transformers_stream import IncrementalDecoder, StopMatcher, hf_source
from byzer_like.errors import BackendError, InvalidRequestError, ModelLoadError
from byzer_like.prepare import default_chat_model
from byzer_like.protocol import ChatRequest, Chunk, CompletionRequest, SamplingParams, Usage
from byzer_like.spec import AdapterSpec, DeploySpec

_DONE = object()


class TransformersOptions(SamplingDefaults):
    """transformers engine options (``--infer_params`` keys, with or without the ``backend.`` prefix)."""

    dtype: str = Field(default="float32", description="Weights dtype: float32, bfloat16, float16 or auto.")
    trust_remote_code: bool = Field(default=False, description="Run model code shipped with the folder.")
    device_map: str | None = Field(default=None, description="accelerate device map, e.g. auto (GPU workers).")
    num_threads: int | None = Field(default=None, ge=1, description="torch threads; default from cpus_per_worker.")
    max_model_len: int | None = Field(default=None, ge=16, description="Longest prompt + answer in tokens.")


class TransformersBackend(Backend):
    """Serves a causal LM with ``transformers`` ``generate``."""

    options_model: ClassVar[type[EngineOptions]] = TransformersOptions
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "top_k", "min_p", "stop",
                                  "repetition_penalty", "seed", "stop_token_ids", "ignore_eos"})
    supported_structured = frozenset({"tools", "json_object", "json_schema", "regex"})
    default_concurrency = 1
    default_cpus = 1.0
    options: TransformersOptions

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        super().__init__(spec, index)
        self._model: Any = None
        self._tokenizer: Any = None
        self._compiler: Any = None  # xgrammar's grammar compiler, made on the first constrained request
        self._lock = asyncio.Lock()
        self._adapters: dict[str, str] = {}  # name -> local PEFT folder

    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Default the model to the prepared SmolLM2 folder; check a given path is a folder or a GGUF file."""
        cls.parse_options(spec)
        if spec.backend.model_path is None:
            return spec.with_model_path(default_chat_model("transformers"))
        hf_source(spec.backend.model_path)
        return spec

    @property
    def num_threads(self) -> int:
        """Torch threads from ``num_threads`` or from the worker's CPUs."""
        return self.options.num_threads or max(1, round(self.spec.resources.cpus_per_worker or 1))

    async def start(self) -> None:
        """Load tokenizer and model (in a thread)."""
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelLoadError(f"transformers is not installed ({exc}); "
                                 "run `pip install 'byzer-like[transformers]'`") from None
        torch.set_num_threads(self.num_threads)
        source, kwargs = hf_source(self.spec.backend.model_path or "")
        opts = self.options
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=opts.trust_remote_code,
                                                            **kwargs)
            self._model = AutoModelForCausalLM.from_pretrained(
                source, dtype=opts.dtype if opts.dtype == "auto" else getattr(torch, opts.dtype),
                trust_remote_code=opts.trust_remote_code, device_map=opts.device_map, **kwargs).eval()
        except Exception as exc:  # the engine's own error, shown to the user
            raise ModelLoadError(f"transformers could not load '{self.spec.backend.model_path}': {exc}") from None

    @property
    def max_model_len(self) -> int:
        """The context window: the option, else the model's ``max_position_embeddings``."""
        return self.options.max_model_len or getattr(self._model.config, "max_position_embeddings", 2048)

    async def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Format with the tokenizer's chat template, then generate."""
        self.check_params(req)
        if not getattr(self._tokenizer, "chat_template", None):
            raise InvalidRequestError("this model has no chat template; use completion instead", param="messages")
        constraint = constraint_for(req)
        messages = prompt_messages(req) or [{"role": m.role, "content": m.text()} for m in req.messages]
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)
        async for chunk in read_answer(self._generate(list(_as_ids(ids)), req, constraint), constraint):
            yield chunk

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Continue ``req.prompt`` (constrained when ``response_format`` asks)."""
        self.check_params(req)
        async for chunk in self._generate(self._tokenizer.encode(req.prompt), req, constraint_for(req)):
            yield chunk

    def logits_processor(self, constraint: Constraint) -> Any:
        """An xgrammar logits processor enforcing ``constraint`` (one per ``generate`` call).

        xgrammar (also vLLM's default structured-output backend) ships a transformers ``LogitsProcessor``, compiles
        JSON schemas, regexes and structural tags against the tokenizer, and caches compiled grammars.
        """
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._model.config.vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        if constraint.kind == "regex":
            compiled = self._compiler.compile_regex(constraint.regex or "")
        elif constraint.kind == "text_or_calls":
            tags = [xgr.StructuralTagItem(begin=t["begin"], schema=json.dumps(t["schema"]), end=t["end"])
                    for t in constraint.tagged_structures()]
            compiled = self._compiler.compile_structural_tag(tags, [TOOL_OPEN])
        else:
            # NOTE: compact JSON (as on vLLM): a small model cannot spend max_tokens on blank lines
            compiled = self._compiler.compile_json_schema(json.dumps(constraint.schema or {}), any_whitespace=False,
                                                          separators=(",", ":"))
        return LogitsProcessor(compiled)

    def to_generate_kwargs(self, req: SamplingParams, prompt_len: int) -> dict[str, Any]:
        """Translate our sampling parameters into ``generate`` keyword arguments."""
        o = self.options
        room = self.max_model_len - prompt_len
        temperature = o.default_temperature if req.temperature is None else req.temperature
        kwargs: dict[str, Any] = {"max_new_tokens": o.max_new_tokens(req.max_tokens, room),
                                  "do_sample": temperature > 0,
                                  "repetition_penalty": req.repetition_penalty or o.default_repetition_penalty}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=req.top_p or o.default_top_p, top_k=req.top_k or 0)
            if req.min_p is not None:
                kwargs["min_p"] = req.min_p
        eos = list(req.stop_token_ids or [])
        if not req.ignore_eos:
            eos += _as_list(self._model.generation_config.eos_token_id or self._tokenizer.eos_token_id)
        kwargs["eos_token_id"] = eos or None
        if req.ignore_eos:
            kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        return kwargs

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load a PEFT LoRA beside the others (the first one wraps the model in a ``PeftModel``)."""
        from byzer_like.lora import resolve_adapter
        from byzer_like.prepare import cache_dir

        local = await asyncio.to_thread(resolve_adapter, adapter.source, cache_dir())
        if local.kind != "peft":
            raise InvalidRequestError(f"adapter '{adapter.name}' is a {local.kind} file; the transformers engine "
                                      "loads PEFT folders (adapter_config.json + adapter_model.safetensors)",
                                      param="source")
        if adapter.scale != 1.0:
            raise InvalidRequestError("the transformers engine applies adapters at the scale they were trained "
                                      "with; leave --scale at 1", param="scale")
        async with self._lock:  # NOTE: never while a generation runs
            await asyncio.to_thread(self._load_adapter, adapter.name, str(local.path))
        return {"kind": local.kind, "path": str(local.path)}

    def _load_adapter(self, name: str, path: str) -> None:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ModelLoadError(f"peft is not installed ({exc}); run `pip install 'byzer-like[transformers]'`") \
                from None
        try:
            if name in self._adapters:
                self._model.delete_adapter(name)
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(path, adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name).eval()
        except Exception as exc:  # PEFT's own error (wrong base model, bad files), shown to the user
            raise InvalidRequestError(f"PEFT could not load adapter '{name}' on this model: {exc}",
                                      param="source") from None
        self._adapters[name] = path

    async def remove_adapter(self, name: str) -> None:
        """Delete the adapter; the last one removed unwraps the base model again."""
        async with self._lock:
            if self._adapters.pop(name, None) is None:
                return
            if not self._adapters:
                self._model = await asyncio.to_thread(self._model.unload)
                return
            self._model.set_adapter(next(iter(self._adapters)))
            self._model.delete_adapter(name)

    def _adapter_context(self, name: str | None) -> Any:
        """Inside the generation lock: run with exactly adapter ``name`` (None: the base model)."""
        if not self._adapters:
            if name is not None:
                raise BackendError(f"adapter '{name}' is not loaded on worker {self.index}")
            return contextlib.nullcontext()
        if name is None:
            return self._model.disable_adapter()
        if name not in self._adapters:
            raise BackendError(f"adapter '{name}' is not loaded on worker {self.index}")
        self._model.set_adapter(name)
        return contextlib.nullcontext()

    async def _generate(self, ids: list[int], req: SamplingParams,
                        constraint: Constraint | None = None) -> AsyncIterator[Chunk]:
        if len(ids) >= self.max_model_len:
            raise InvalidRequestError(f"the prompt is {len(ids)} tokens but the context window is "
                                      f"{self.max_model_len}; shorten it", param="messages")
        kwargs = self.to_generate_kwargs(req, len(ids))
        if constraint is not None:
            kwargs["logits_processor"] = [self.logits_processor(constraint)]
        matcher, decoder = StopMatcher(req.stop), IncrementalDecoder(self._tokenizer)
        count, finish = 0, None
        async with self._lock:  # NOTE: generate() runs one batch at a time; requests take turns.
            async for new_ids in self._run(ids, kwargs, req.seed, getattr(req, "adapter", None)):
                count += len(new_ids)
                text, hit = matcher.feed(decoder.add(new_ids))
                if text:
                    yield Chunk(text=text)
                if hit:
                    finish = "stop"
                    break
        if finish is None:
            tail = matcher.flush()
            if tail:
                yield Chunk(text=tail)
            finish = "length" if count >= kwargs["max_new_tokens"] else "stop"
        yield Chunk(finish_reason=finish, usage=Usage(prompt_tokens=len(ids), completion_tokens=count))

    async def _run(self, ids: list[int], kwargs: dict[str, Any], seed: int | None,
                   adapter: str | None = None) -> AsyncIterator[list[int]]:
        """Run ``generate`` in a thread; yield the new token ids as they come; stop it when we are closed."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        loop, queue, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        class _Push(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                loop.call_soon_threadsafe(queue.put_nowait, value.reshape(-1).tolist())

            def end(self) -> None:
                pass

        class _Stopped(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        context = self._adapter_context(adapter)

        def work() -> None:
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                with torch.inference_mode(), context:
                    self._model.generate(torch.tensor([ids], device=self._model.device),
                                         attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                   device=self._model.device),
                                         streamer=_Push(), stopping_criteria=StoppingCriteriaList([_Stopped()]),
                                         pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                                         **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        thread = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise BackendError(f"transformers failed: {type(item).__name__}: {item}") from None
                yield item
        finally:
            stop.set()
            await asyncio.shield(thread)  # NOTE: release the lock only once generate() has returned.

    async def shutdown(self) -> None:
        """Drop the model."""
        async with self._lock:
            self._model = self._tokenizer = None

    def describe(self) -> dict[str, Any]:
        """Model path, threads, dtype."""
        return {"model_path": self.spec.backend.model_path, "num_threads": self.num_threads,
                "dtype": self.options.dtype, "adapters": sorted(self._adapters)}


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _as_ids(value: Any) -> list[int]:
    """``apply_chat_template`` returns ids, or a BatchEncoding in some versions."""
    if hasattr(value, "input_ids") or isinstance(value, dict):
        value = value["input_ids"]
    return value
