"""The ``Backend`` base class: the one interface every engine and SaaS proxy implements.

A backend works at the level of typed requests (``protocol.py``), not raw prompts. Construction is sync and does
no I/O; ``start()`` loads the engine inside the worker actor. Streams are async generators of ``Chunk``.

Example:
    >>> class Upper(Backend):
    ...     async def chat(self, req):
    ...         yield Chunk(text=req.messages[-1].text().upper(), finish_reason="stop")
"""

from __future__ import annotations

import abc
from typing import Any, AsyncIterator, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from byzer_like.errors import InvalidSpecError, UnsupportedError
from byzer_like.protocol import (
    ChatRequest,
    ChatResponse,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageRequest,
    ImageResponse,
    SamplingParams,
    SpeechRequest,
    SpeechResponse,
    TranscriptionRequest,
    TranscriptionResponse,
    collect,
)
from byzer_like.spec import AdapterSpec, DeploySpec


class EngineOptions(BaseModel):
    """Base of each backend's options model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SamplingDefaults(EngineOptions):
    """Sampling used when a request leaves a parameter unset (llama.cpp's customary values).

    ``default_max_tokens`` None means "up to the context window": no hidden cap on the answer.
    """

    default_max_tokens: int | None = Field(default=None, ge=1,
                                           description="max_tokens when a request sets none; None = context room.")
    default_temperature: float = Field(default=0.2, ge=0, description="Temperature when a request sets none.")
    default_top_p: float = Field(default=0.95, gt=0, le=1, description="top_p when a request sets none.")
    default_repetition_penalty: float = Field(default=1.1, gt=0,
                                              description="Repetition penalty when a request sets none.")

    def max_new_tokens(self, requested: int | None, room: int) -> int:
        """Tokens to generate: the request's (or the default) limit, never past the context room."""
        return min(requested or self.default_max_tokens or room, room)


class Backend(abc.ABC):
    """One engine instance inside one worker actor.

    Class attributes describe the backend to the layers above: its options model, the sampling parameters it
    honours, its default concurrency and default CPUs per worker.

    Args:
        spec: The resolved deployment spec.
        index: This worker's index in the pool.
    """

    options_model: ClassVar[type[EngineOptions]] = EngineOptions
    supported_params: ClassVar[frozenset[str]] = frozenset()
    # tool calls and answer formats it honours: "tools", "json_object", "json_schema", "regex"
    supported_structured: ClassVar[frozenset[str]] = frozenset()
    default_concurrency: ClassVar[int] = 1
    default_cpus: ClassVar[float] = 1.0
    # NOTE: a local engine on few cores loses tokens/s to per-token messages (two Ray hops each); coalesce them.
    default_stream_interval_ms: ClassVar[float] = 50.0

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        self.spec = spec
        self.index = index
        self.options = self.parse_options(spec)

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> EngineOptions:
        """Validate ``spec.backend.engine_kwargs`` against this backend's options model.

        Raises:
            InvalidSpecError: naming the first bad option and what to do.
        """
        try:
            return cls.options_model.model_validate(spec.backend.engine_kwargs)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(part) for part in err["loc"]) or "infer_params"
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(cls.options_model.model_fields)) or "none"
                message = (f"infer_params '{name}' is not an option of the {spec.backend.registry_key} backend; "
                           f"its options: {known}")
            else:
                message = f"infer_params '{name}': {err['msg']} (got {err['input']!r})"
            raise InvalidSpecError(message, param=name) from None

    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Check the spec before any actor starts and fill what the backend defaults (e.g. the model path).

        Returns:
            The spec to deploy (the input itself when nothing needs filling).

        Raises:
            InvalidSpecError: when the spec cannot work with this backend.
        """
        cls.parse_options(spec)
        return spec

    def check_params(self, req: SamplingParams) -> None:
        """Reject sampling parameters this backend cannot honour.

        Raises:
            UnsupportedError: naming the parameter.
        """
        unsupported = sorted(req.set_params() - self.supported_params)
        if unsupported:
            raise UnsupportedError(
                f"parameter '{unsupported[0]}' is not supported by the {self.spec.backend.registry_key} backend; "
                "remove it from the request", param=unsupported[0])
        self.check_structured(req)

    def check_structured(self, req: SamplingParams) -> None:
        """Reject tools or an answer format this backend cannot honour.

        Raises:
            UnsupportedError: naming ``tools`` or ``response_format``.
        """
        asked = req.structured_params() if isinstance(req, (ChatRequest, CompletionRequest)) else set()
        if "tools" in asked and "tools" not in self.supported_structured:
            raise self.unsupported("tools (function calling)", "tools")
        fmt = getattr(req, "response_format", None)
        if "response_format" in asked and fmt.type not in self.supported_structured:
            raise self.unsupported(f"response_format '{fmt.type}'", "response_format")

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the engine. Called once inside the worker actor."""

    @abc.abstractmethod
    def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Stream the answer to a chat request."""

    async def chat_once(self, req: ChatRequest) -> ChatResponse:
        """The whole answer to a chat request (the stream, collected; a backend may answer in one piece)."""
        return await collect(self.chat(req))

    def complete(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Stream a plain completion of ``req.prompt``."""
        raise UnsupportedError(f"{self.spec.backend.registry_key} does not support text completion", param="prompt")

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts, keeping their order."""
        raise UnsupportedError(f"{self.spec.backend.registry_key} does not support embeddings", param="input")

    async def transcribe(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """Speech to text: transcribe one audio file."""
        raise self.unsupported("speech to text (audio transcription)", "file")

    async def speech(self, req: SpeechRequest) -> SpeechResponse:
        """Text to speech: synthesise ``req.input``."""
        raise self.unsupported("text to speech", "input")

    async def generate_image(self, req: ImageRequest) -> ImageResponse:
        """Generate images from ``req.prompt``."""
        raise self.unsupported("image generation", "prompt")

    def unsupported(self, capability: str, param: str) -> UnsupportedError:
        """The error for a capability this backend lacks, naming the capability and the backend.

        Args:
            capability: What was asked for, e.g. "text to speech".
            param: The request field that asked for it.
        """
        return UnsupportedError(f"{self.spec.alias} ({self.spec.backend.registry_key}) does not support "
                                f"{capability}; send this request to an alias whose model does", param=param,
                                code="unsupported_capability")

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load (or replace) the LoRA adapter ``adapter.name``; requests name it in ``adapter``.

        Returns:
            Facts about the loaded adapter for ``stat`` (its local path, kind, ...).
        """
        raise self.unsupported("LoRA adapters", "adapter")

    async def remove_adapter(self, name: str) -> None:
        """Unload the adapter ``name`` (the router has let every request using it finish)."""
        raise self.unsupported("LoRA adapters", "adapter")

    async def check_health(self) -> None:  # noqa: B027 - optional hook
        """Raise if the engine is unusable."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded engine for ``stat`` (model file, threads, ...)."""
        return {}
