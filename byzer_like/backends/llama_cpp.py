"""llama.cpp backend (``llama-cpp-python``): GGUF models on CPU or GPU.

One ``Llama`` object runs one sequence at a time, so the worker serialises generations with a lock, whatever
``worker_concurrency`` says; generation runs in a thread so the actor's event loop stays responsive, and a
cancelled stream stops the engine at the next token.

Example:
    byzer-like deploy --infer_backend llama_cpp --model_path model.gguf --model smol --num_workers 2
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Iterator

from pydantic import AliasChoices, Field

from byzer_like.backends.base import Backend, EngineOptions, SamplingDefaults
from byzer_like.backends.constrained import (
    TOOL_CLOSE,
    TOOL_OPEN,
    Constraint,
    constraint_for,
    prompt_messages,
    read_answer,
)
from byzer_like.backends.llama_lora import LlamaAdapters
from byzer_like.backends.transformers_stream import StopMatcher
from byzer_like.errors import BackendError, InvalidRequestError, InvalidSpecError, ModelLoadError
from byzer_like.models import bundled_smollm2_gguf
from byzer_like.protocol import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
    coalesce_iter,
)
from byzer_like.spec import AdapterSpec, DeploySpec

_PARAM_NAMES = {"repetition_penalty": "repeat_penalty"}  # ours -> llama.cpp's
_DONE = object()


class LlamaCppOptions(SamplingDefaults):
    """llama.cpp engine options (byzerllm's bare ``--infer_params`` keys)."""

    n_ctx: int = Field(default=4096, ge=16, description="Context window in tokens.")
    n_threads: int | None = Field(default=None, ge=1, description="Generation threads; default from cpus_per_worker.")
    n_batch: int = Field(default=512, ge=1, description="Prompt batch size.")
    n_gpu_layers: int = Field(default=0, validation_alias=AliasChoices("n_gpu_layers", "num_gpu_layers"),
                              description="Layers offloaded to GPU (-1 = all).")
    verbose: bool = Field(default=False, description="Print llama.cpp's own logs.")
    use_mmap: bool = Field(default=True, description="Memory-map the model file.")
    use_mlock: bool = Field(default=False, description="Lock the model in RAM.")
    seed: int | None = Field(default=None, description="Default sampling seed.")
    chat_template: str | None = Field(default=None, description="Jinja chat template; default: the model's own.")
    embedding: bool = Field(default=False, description="Load for embeddings.")
    default_top_k: int = Field(default=40, ge=0, description="top_k when a request sets none.")
    default_min_p: float = Field(default=0.05, ge=0, le=1, description="min_p when a request sets none.")


class LlamaCppBackend(Backend):
    """Serves a GGUF model with llama.cpp."""

    options_model: ClassVar[type[EngineOptions]] = LlamaCppOptions
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "top_k", "min_p", "stop",
                                  "repetition_penalty", "presence_penalty", "frequency_penalty", "seed"})
    supported_structured = frozenset({"tools", "json_object", "json_schema"})
    default_concurrency = 1
    default_cpus = 1.0
    options: LlamaCppOptions

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        super().__init__(spec, index)
        self._llama: Any = None
        self._formatter: Any = None
        self._lock = asyncio.Lock()
        self._adapters = LlamaAdapters()

    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Default the model to the bundled SmolLM2; check a given path is a GGUF file."""
        cls.parse_options(spec)
        path = spec.backend.model_path
        if path is None:
            return spec.with_model_path(bundled_smollm2_gguf())
        if Path(path).is_dir() and len(found := sorted(Path(path).rglob("*.gguf"))) == 1:
            return spec.with_model_path(found[0])  # a folder (an unpacked archive) holding one GGUF file
        if not Path(path).is_file():
            raise InvalidSpecError(f"model_path '{path}' is not a file; llama_cpp needs a .gguf file",
                                   param="model_path")
        return spec

    @property
    def n_threads(self) -> int:
        """Threads from ``n_threads`` or from the worker's CPUs."""
        return self.options.n_threads or max(1, round(self.spec.resources.cpus_per_worker or 1))

    async def start(self) -> None:
        """Load the GGUF file (in a thread: it takes a while for big models)."""
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise ModelLoadError(f"llama-cpp-python is not installed ({exc}); "
                                 "run `pip install 'byzer-like[llama-cpp]'`") from None
        opts = self.options
        try:
            self._llama = Llama(
                model_path=self.spec.backend.model_path, n_ctx=opts.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, n_batch=opts.n_batch, n_gpu_layers=opts.n_gpu_layers,
                verbose=opts.verbose, use_mmap=opts.use_mmap, use_mlock=opts.use_mlock, embedding=opts.embedding,
                seed=opts.seed if opts.seed is not None else 0xFFFFFFFF)
        except Exception as exc:  # the engine's own error, shown to the user
            raise ModelLoadError(f"llama.cpp could not load '{self.spec.backend.model_path}': {exc}") from None
        template = opts.chat_template or self._llama.metadata.get("tokenizer.chat_template")
        if template:
            eos = self._token_text(self._llama.token_eos())
            bos = self._token_text(self._llama.token_bos())
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def _token_text(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="ignore") if token >= 0 else ""

    async def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Format with the model's chat template, then generate (under a grammar for tools and JSON)."""
        self.check_params(req)
        if self._formatter is None:
            raise InvalidRequestError("this model has no chat template; use completion, or deploy with "
                                      "infer_params chat_template=...", param="messages")
        constraint = constraint_for(req)
        messages = prompt_messages(req) or [m.model_dump(exclude_none=True) for m in req.messages]
        formatted = self._formatter(messages=messages)
        stop = list(req.stop or []) + list(_as_list(formatted.stop))
        tokens = self._llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special,
                                      special=True)
        stream = self._generate(tokens, req.model_copy(update={"stop": stop}), gbnf(constraint))
        async for chunk in read_answer(stream, constraint):
            yield chunk

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Continue ``req.prompt`` (special tokens parsed, as llama.cpp and TGI do; a JSON format constrains it)."""
        self.check_params(req)
        tokens = self._llama.tokenize(req.prompt.encode("utf-8"), add_bos=True, special=True)
        async for chunk in self._generate(tokens, req, gbnf(constraint_for(req))):
            yield chunk

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts (the model must be deployed with ``embedding=true``)."""
        if not self.options.embedding:
            raise InvalidRequestError("this llama.cpp deployment was not loaded for embeddings; deploy it with "
                                      "--infer_params embedding=true", param="input")
        async with self._lock:
            self._adapters.activate(self._llama, None)  # embeddings come from the base model
            result = await asyncio.to_thread(self._llama.create_embedding, req.input)
        vectors = [item["embedding"] for item in result["data"]]
        return EmbeddingResponse(embeddings=vectors, usage=Usage(prompt_tokens=result["usage"]["prompt_tokens"]))

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load a GGUF LoRA (a PEFT folder is converted once and cached); it waits for the running generation."""
        from byzer_like.lora import peft_to_gguf, resolve_adapter
        from byzer_like.prepare import cache_dir

        local = await asyncio.to_thread(resolve_adapter, adapter.source, cache_dir())
        path = local.path
        if local.kind == "peft":
            path = await asyncio.to_thread(peft_to_gguf, local.path, Path(self.spec.backend.model_path or ""),
                                           cache_dir())
        async with self._lock:
            await asyncio.to_thread(self._adapters.load, self._llama, adapter.name, path, adapter.scale)
        return {"kind": local.kind, "path": str(path)}

    async def remove_adapter(self, name: str) -> None:
        """Free the adapter (after the running generation)."""
        async with self._lock:
            self._adapters.unload(self._llama, name)

    async def _generate(self, tokens: list[int], req: ChatRequest | CompletionRequest,
                        grammar: str | None = None) -> AsyncIterator[Chunk]:
        n_ctx = self.options.n_ctx
        if len(tokens) >= n_ctx:
            raise InvalidRequestError(
                f"the prompt is {len(tokens)} tokens but the context window is {n_ctx}; shorten it or deploy "
                "with a larger --infer_params n_ctx=...", param="messages")
        async with self._lock:  # NOTE: one Llama object runs one sequence at a time.
            interval_s = (self.spec.stream_interval_ms or 0) / 1000
            async for chunk in _drain_thread(lambda stop: self._run(tokens, req, stop, grammar), interval_s):
                yield chunk

    def _run(self, tokens: list[int], req: ChatRequest | CompletionRequest, stop: threading.Event,
             grammar: str | None = None) -> Iterator[Chunk]:
        kwargs = self._sampling_defaults()
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
        kwargs.update({_PARAM_NAMES.get(k, k): getattr(req, k) for k in req.set_params() - {"max_tokens", "stop"}})
        limit = self.options.max_new_tokens(req.max_tokens, self.options.n_ctx - len(tokens))
        # NOTE: stop strings are matched here, not by llama.cpp: its stream then hands over each token's text as it
        # is sampled, so we know which token ended the answer and count it as llama.cpp's own usage does.
        matcher = StopMatcher(req.stop)
        self._adapters.activate(self._llama, req.adapter)
        stream = self._llama.create_completion(tokens, max_tokens=limit, stream=True, **kwargs)
        finish, hit = None, False
        try:
            for part in stream:
                choice = part["choices"][0]
                finish = choice.get("finish_reason") or finish
                text, hit = matcher.feed(choice["text"])
                if text:
                    yield Chunk(text=text)
                if hit:
                    finish = "stop"
                    break
                if stop.is_set():
                    finish = "cancelled"
                    break
        finally:
            stream.close()
        if not hit and finish != "cancelled" and (tail := matcher.flush()):
            yield Chunk(text=tail)
        # NOTE: llama.cpp evaluates every sampled token but the last: the end-of-generation token (not part of the
        # answer), or the one that reached max_tokens or completed a stop string (both part of it).
        generated = self._llama.n_tokens - len(tokens) + (1 if finish == "length" or hit else 0)
        yield Chunk(finish_reason=finish or "stop",
                    usage=Usage(prompt_tokens=len(tokens), completion_tokens=max(0, generated)))

    def _sampling_defaults(self) -> dict[str, Any]:
        o = self.options
        return {"temperature": o.default_temperature, "top_p": o.default_top_p, "top_k": o.default_top_k,
                "min_p": o.default_min_p, "repeat_penalty": o.default_repetition_penalty}

    async def shutdown(self) -> None:
        """Free the model (``close()`` avoids llama.cpp's noisy ``__del__`` at exit)."""
        async with self._lock:
            if self._llama is not None:
                for name in list(self._adapters.loaded):
                    self._adapters.unload(self._llama, name)
                self._llama.close()
                self._llama = None

    def describe(self) -> dict[str, Any]:
        """Model file, threads and context size."""
        return {"model_path": self.spec.backend.model_path, "n_threads": self.n_threads, "n_ctx": self.options.n_ctx,
                **self._adapters.describe()}


def gbnf(constraint: Constraint | None) -> str | None:
    """The llama.cpp grammar (GBNF) for a constraint; None for free text.

    JSON schemas go through llama-cpp-python's own converter. ``text_or_calls`` is plain text that does not start
    with ``<``, or one or more ``<tool_call>`` blocks each holding a schema-valid call.
    """
    if constraint is None:
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if constraint.kind in ("json", "calls"):
        return json_schema_to_gbnf(json.dumps(constraint.schema or {}))
    if constraint.kind == "text_or_calls":
        # NOTE: the converter names its top rule `root`; ours wraps it, so it becomes `call`.
        call = json_schema_to_gbnf(json.dumps(constraint.schema)).replace("root ::=", "call ::=", 1)
        block = f'"{TOOL_OPEN}" space call space "{TOOL_CLOSE}"'
        return f"root ::= free-text | {block} (space {block})*\nfree-text ::= [^<] [^\\x00]*\n{call}"
    raise InvalidRequestError("llama.cpp cannot constrain to a regex; use a JSON schema", param="response_format")


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


async def _drain_thread(produce: Any, interval_s: float = 0.0) -> AsyncIterator[Chunk]:
    """Run a blocking chunk generator in a thread and yield its chunks here, without polling.

    ``produce(stop_event)`` returns the generator; when our consumer goes away (cancel or close), the event is set,
    the producer stops at its next token, and we wait for the thread before returning (so the caller's lock is only
    released once the engine is idle).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        # NOTE: coalesce here, in the generating thread: waking the event loop for every token makes the two
        # threads fight over the GIL and slows generation (measured: bench/engines.py).
        try:
            for chunk in coalesce_iter(produce(stop), interval_s):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    thread = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                if isinstance(item, (InvalidRequestError, BackendError)):
                    raise item
                raise BackendError(f"llama.cpp failed: {item}") from None
            yield item
    finally:
        stop.set()
        await asyncio.shield(thread)
