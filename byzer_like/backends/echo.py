"""A no-op engine that echoes the last user message word by word.

It serves plumbing tests and the router benchmark (``custom/echo``): everything above the backend — router, queue,
stat, client, CLI, gateway — runs for real, with no model cost. An adapter added to an echo alias makes the
answer start with ``[NAME]``, so adapter routing (registry, restarts, scale-up) is testable without a model. Its
options can add per-token delay or inject failures, so fault paths are testable without a real engine failing on
cue, and ``echo_params`` makes it answer with the sampling parameters it received, so a test can see exactly what
reached the engine.

Example:
    byzer-like deploy --pretrained_model_type custom/echo --model echo --infer_params token_delay_s=0.01
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, ClassVar

from pydantic import Field

from byzer_like.backends.base import Backend, EngineOptions
from byzer_like.errors import BackendError, InvalidRequestError, ModelLoadError
from byzer_like.protocol import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    SamplingParams,
    Usage,
)
from byzer_like.spec import AdapterSpec


class EchoOptions(EngineOptions):
    """Options of the echo backend."""

    token_delay_s: float = Field(default=0.0, ge=0, description="Sleep before each streamed word.")
    load_error: str | None = Field(default=None, description="If set, start() fails with this message.")
    fail_marker: str | None = Field(default=None, description="A request containing this text fails mid-stream.")
    echo_params: bool = Field(default=False, description="Answer with the JSON of the sampling parameters the "
                              "request carried (those set, sorted by name) instead of echoing its text.")


class EchoBackend(Backend):
    """Echoes the last message back, one word per chunk."""

    options_model: ClassVar[type[EngineOptions]] = EchoOptions
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "top_k", "seed", "stop"})
    default_concurrency = 64
    default_cpus = 0.01
    default_stream_interval_ms = 0.0  # already paced by the upstream (or a test fixture): pass chunks through
    options: EchoOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adapters: dict[str, AdapterSpec] = {}

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Remember the adapter; its answers start with ``[NAME]`` (a source ``fail`` fails, for tests)."""
        if adapter.source == "fail":
            raise InvalidRequestError(f"adapter '{adapter.name}' failed to load on purpose (source 'fail')",
                                      param="source")
        self.adapters[adapter.name] = adapter
        return {"kind": "echo"}

    async def remove_adapter(self, name: str) -> None:
        """Forget the adapter."""
        self.adapters.pop(name, None)

    def _tagged(self, text: str, adapter: str | None) -> str:
        if adapter is None:
            return text
        if adapter not in self.adapters:
            raise BackendError(f"adapter '{adapter}' is not loaded on worker {self.index}")
        return f"[{adapter}] {text}"

    def describe(self) -> dict[str, Any]:
        """The adapters this worker holds."""
        return {"adapters": sorted(self.adapters)}

    async def start(self) -> None:
        """Fail on purpose when ``load_error`` is set."""
        if self.options.load_error:
            raise ModelLoadError(self.options.load_error)

    async def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Echo the last message's text."""
        self.check_params(req)
        text = self._params_json(req) if self.options.echo_params else None
        async for chunk in self._echo(self._tagged(req.messages[-1].text(), req.adapter), req.max_tokens, whole=text):
            yield chunk

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Echo the prompt."""
        self.check_params(req)
        text = self._params_json(req) if self.options.echo_params else None
        async for chunk in self._echo(self._tagged(req.prompt, req.adapter), req.max_tokens, whole=text):
            yield chunk

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """A deterministic 4-dim vector per text (length, vowels, spaces, first char)."""
        vectors = [[float(len(t)), float(sum(c in "aeiou" for c in t)), float(t.count(" ")), float(ord(t[:1] or "\0"))]
                   for t in req.input]
        return EmbeddingResponse(embeddings=vectors, usage=Usage(prompt_tokens=sum(len(t.split()) for t in req.input)))

    @staticmethod
    def _params_json(req: SamplingParams) -> str:
        """The sampling parameters ``req`` carries (the fields set, by name) as JSON."""
        return json.dumps({name: getattr(req, name) for name in sorted(req.set_params())}, sort_keys=True)

    async def _echo(self, text: str, max_tokens: int | None, whole: str | None = None) -> AsyncIterator[Chunk]:
        if whole is not None:  # echo_params: the answer is one piece, whatever max_tokens says
            yield Chunk(text=whole)
            yield Chunk(finish_reason="stop", usage=Usage(prompt_tokens=len(text.split(" ")), completion_tokens=1))
            return
        words = text.split(" ")
        limit = len(words) if max_tokens is None else min(max_tokens, len(words))
        marker = self.options.fail_marker
        for i, word in enumerate(words[:limit]):
            if self.options.token_delay_s:
                await asyncio.sleep(self.options.token_delay_s)
            if marker and i == 1 and marker in text:
                raise BackendError(f"echo backend failed on purpose (fail_marker '{marker}')")
            yield Chunk(text=word if i == 0 else " " + word)
        finish = "length" if limit < len(words) else "stop"
        yield Chunk(finish_reason=finish, usage=Usage(prompt_tokens=len(words), completion_tokens=limit))
