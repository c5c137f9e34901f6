"""``SaasBackend``: what every SaaS proxy shares — options, sealed keys, retries, error mapping, usage counters.

A provider subclass supplies its options model, its ``ErrorMap``, ``make_client()`` and ``stream_chat()`` (and
``embed_once()``, ``transcribe_once()``, ``speech_once()``, ``image_once()`` where the provider has them).
Everything else — parameter checks, retries, the "stream ended early" check, usage and timing counters for
``stat`` — lives here once.

Example:
    >>> class Upper(SaasBackend):  # doctest: +SKIP
    ...     provider = "upper"
    ...     def make_client(self): return None
    ...     async def stream_chat(self, req):
    ...         yield Chunk(text=req.messages[-1].text().upper(), finish_reason="stop")
"""

from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, TypeVar

from pydantic import Field, SecretStr

from byzer_like.backends.base import Backend, EngineOptions
from byzer_like.errors import BackendError, ByzerLikeError, RateLimitError, UnsupportedError, UpstreamError
from byzer_like.metrics import AliasMetrics
from byzer_like.protocol import (
    ChatRequest,
    ChatResponse,
    Chunk,
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
from byzer_like.saas.errors import ErrorMap
from byzer_like.saas.retry import RetryPolicy, call_with_retries, stream_with_retries
from byzer_like.saas.secrets import SECRET_FIELDS, read_secret, seal_secrets
from byzer_like.spec import AdapterSpec, DeploySpec

T = TypeVar("T")


class SaasOptions(EngineOptions):
    """Options every SaaS proxy takes (``--infer_params saas.<name>=...``)."""

    model: str = Field(description="The provider's model name, e.g. gpt-4o or claude-3-5-sonnet-20240620.")
    api_key: SecretStr | None = Field(default=None, description="The key (sealed at the edge; never shown).")
    api_key_file: str | None = Field(default=None, description="Read the key from this file inside the worker.")
    base_url: str | None = Field(default=None, description="The provider's API root (OpenAI-compatible hosts).")
    timeout: float = Field(default=120.0, gt=0, description="Seconds one upstream attempt may take.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries on 429, 5xx, timeouts, lost connections.")
    retry_base_s: float = Field(default=0.5, ge=0, description="First backoff ceiling in seconds (doubles).")
    retry_max_s: float = Field(default=20.0, ge=0, description="Largest single backoff in seconds.")
    retry_budget_s: float = Field(default=120.0, ge=0, description="No retry starts after this many seconds.")


@dataclass
class UsageCounters:
    """What one worker's proxy did: requests, errors, retries, tokens, upstream time, rate limits."""

    requests: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    upstream_seconds: float = 0.0
    last_retry_after_s: float | None = None


class SaasBackend(Backend):
    """Base of the SaaS proxies: async SDK clients, one worker serving many requests at once."""

    options_model: ClassVar[type[EngineOptions]] = SaasOptions
    default_concurrency = 1000
    default_cpus = 0.01
    default_stream_interval_ms = 0.0  # already paced by the upstream (or a test fixture): pass chunks through
    provider: ClassVar[str] = "saas"
    options: SaasOptions

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        super().__init__(spec, index)
        self.counters = UsageCounters()
        self.metrics = AliasMetrics(spec.alias, spec.backend.registry_key)
        self.errors = self.error_map()
        self.policy = RetryPolicy(self.options.max_retries, self.options.retry_base_s, self.options.retry_max_s,
                                  self.options.retry_budget_s)
        self.client: Any = None
        self.adapter_models: dict[str, str] = {}

    # -- provider hooks ------------------------------------------------------------------------------------
    @classmethod
    def error_map(cls) -> ErrorMap:
        """The provider's exception-type table (override to register SDK exceptions)."""
        return ErrorMap(cls.provider)

    @abc.abstractmethod
    def make_client(self) -> Any:
        """Build the provider's async client (called in ``start()``, once the keys are resolved)."""

    @abc.abstractmethod
    def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One upstream attempt of a chat, as chunks; the last carries ``finish_reason`` and ``usage``."""

    async def embed_once(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One upstream attempt of an embedding request."""
        raise UnsupportedError(f"{self.spec.backend.registry_key} does not support embeddings", param="input")

    async def transcribe_once(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """One upstream attempt of a transcription."""
        raise self.unsupported("speech to text (audio transcription)", "file")

    async def speech_once(self, req: SpeechRequest) -> SpeechResponse:
        """One upstream attempt of text to speech."""
        raise self.unsupported("text to speech", "input")

    async def image_once(self, req: ImageRequest) -> ImageResponse:
        """One upstream attempt of image generation."""
        raise self.unsupported("image generation", "prompt")

    # -- Backend interface ---------------------------------------------------------------------------------
    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Seal secret options before anything can print them, then validate the options."""
        sealed = seal_secrets(spec.backend.engine_kwargs)
        spec = spec.model_copy(update={"backend": spec.backend.model_copy(update={"engine_kwargs": sealed})})
        cls.parse_options(spec)
        return spec

    async def start(self) -> None:
        """Resolve the keys (from the sealed value or a file) and build the client."""
        self.secrets = self.resolve_secrets()
        self.errors.secrets = [v for v in self.secrets.values() if v]
        self.client = self.make_client()

    def resolve_secrets(self) -> dict[str, str | None]:
        """Plain values of the secret options this provider has (``X`` or ``X_file``)."""
        fields = self.options_model.model_fields
        return {name: read_secret(getattr(self.options, name), getattr(self.options, f"{name}_file", None), name)
                for name in SECRET_FIELDS if name in fields}

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """An adapter of a SaaS alias is an upstream model (a fine-tuned one): requests naming it ask that model."""
        self.adapter_models[adapter.name] = adapter.source
        return {"kind": "upstream-model"}

    async def remove_adapter(self, name: str) -> None:
        """Forget the adapter's model."""
        self.adapter_models.pop(name, None)

    def model_for(self, req: ChatRequest) -> str:
        """The upstream model of a request: its adapter's, else the alias's."""
        if req.adapter is None:
            return self.options.model
        try:
            return self.adapter_models[req.adapter]
        except KeyError:
            raise BackendError(f"adapter '{req.adapter}' is not loaded on worker {self.index}") from None

    async def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Stream the answer, retrying before the first chunk; count usage and time."""
        self.check_params(req)
        self.counters.requests += 1
        start = time.perf_counter()
        try:
            async for chunk in stream_with_retries(lambda: self._checked(req), self.policy, self.errors,
                                                   self._on_retry):
                if chunk.usage is not None:
                    self.counters.prompt_tokens += chunk.usage.prompt_tokens
                    self.counters.completion_tokens += chunk.usage.completion_tokens
                yield chunk
        except ByzerLikeError:
            self.counters.errors += 1
            raise
        finally:
            self._timed(start)

    async def chat_once(self, req: ChatRequest) -> ChatResponse:
        """The whole answer in one upstream call where the provider has one (``answer_once``), with retries.

        Providers without it stream and collect (``chat``): a stream cut after its first chunk is an error there.
        """
        if type(self).answer_once is SaasBackend.answer_once:
            return await collect(self.chat(req))
        self.check_params(req)
        out = await self._counted(lambda: self.answer_once(req))
        self.counters.prompt_tokens += out.usage.prompt_tokens
        self.counters.completion_tokens += out.usage.completion_tokens
        return out

    async def answer_once(self, req: ChatRequest) -> ChatResponse:
        """One upstream attempt of a whole answer, for providers that answer in one piece (override it)."""
        raise NotImplementedError

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed with retries."""
        out = await self._counted(lambda: self.embed_once(req))
        self.counters.prompt_tokens += out.usage.prompt_tokens
        return out

    async def transcribe(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """Transcribe with retries."""
        return await self._counted(lambda: self.transcribe_once(req))

    async def speech(self, req: SpeechRequest) -> SpeechResponse:
        """Synthesise speech with retries."""
        return await self._counted(lambda: self.speech_once(req))

    async def generate_image(self, req: ImageRequest) -> ImageResponse:
        """Generate images with retries."""
        return await self._counted(lambda: self.image_once(req))

    def check_params(self, req: SamplingParams) -> None:
        """Reject sampling parameters this provider cannot honour, naming the provider and the parameter."""
        unsupported = sorted(req.set_params() - self.supported_params)
        if unsupported:
            raise UnsupportedError(
                f"parameter '{unsupported[0]}' is not supported by {self.spec.backend.model_type} "
                f"(supported: {', '.join(sorted(self.supported_params))}); remove it from the request",
                param=unsupported[0])
        self.check_structured(req)

    async def shutdown(self) -> None:
        """Close the client's connections."""
        close = getattr(self.client, "close", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result

    def describe(self) -> dict[str, Any]:
        """Provider, model, host and counters for ``stat`` — never a key."""
        source = "file" if getattr(self.options, "api_key_file", None) else (
            "sealed" if getattr(self.options, "api_key", None) else "none")
        return {"provider": self.spec.backend.model_type, "model": self.options.model,
                "base_url": self.options.base_url, "key_source": source, **asdict(self.counters)}

    # -- helpers -------------------------------------------------------------------------------------------
    async def _checked(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One attempt; a stream that ends without a finish reason is an error, never a short answer."""
        finished = False
        async for chunk in self.stream_chat(req):
            finished = finished or chunk.finish_reason is not None
            yield chunk
        if not finished:
            raise UpstreamError(f"{self.provider} upstream ended the stream before finishing; the answer is "
                                "incomplete (connection cut?)")

    async def _counted(self, make: Callable[[], Awaitable[T]]) -> T:
        """``make()`` with retries, counting the request, its errors and its upstream time."""
        self.counters.requests += 1
        start = time.perf_counter()
        try:
            return await call_with_retries(make, self.policy, self.errors, self._on_retry)
        except ByzerLikeError:
            self.counters.errors += 1
            raise
        finally:
            self._timed(start)

    def _timed(self, start: float) -> None:
        seconds = time.perf_counter() - start
        self.counters.upstream_seconds += seconds
        self.metrics.upstream(seconds)

    def _on_retry(self, err: ByzerLikeError) -> None:
        self.counters.retries += 1
        limited = isinstance(err, RateLimitError)
        if limited:
            self.counters.rate_limited += 1
            self.counters.last_retry_after_s = err.retry_after
        self.metrics.upstream_retry(str(self.index), type(err).__name__, limited, getattr(err, "retry_after", None))

    def params(self, req: SamplingParams, names: dict[str, str]) -> dict[str, Any]:
        """The set sampling parameters renamed to the provider's names (``names``: ours -> theirs)."""
        return {names[k]: getattr(req, k) for k in req.set_params() if k in names}
