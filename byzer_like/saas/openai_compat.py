"""OpenAI and every OpenAI-compatible host (DeepSeek, SiliconFlow, Moonshot, 01.AI, Ollama, one-api, vLLM...).

``saas/openai`` and ``saas/official_openai`` both land here, through ``openai.AsyncOpenAI`` with the SDK's own
retries off (ours honour Retry-After with jitter within a budget, the same for every provider). Streams ask for
usage (``stream_options.include_usage``); reasoning models' ``reasoning_content`` goes to ``Chunk.reasoning``, apart
from the answer. Image content parts pass through unchanged (vision models such as ``yi-vision``).

Example:
    byzer-like deploy --pretrained_model_type saas/openai --model deepseek_chat \\
        --infer_params saas.base_url=https://api.deepseek.com/v1 saas.api_key=${DEEPSEEK_API_KEY} \\
        saas.model=deepseek-chat
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator, ClassVar, Literal

import openai
from openai._base_client import make_request_options
from pydantic import Field

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import UpstreamError
from byzer_like.protocol import (
    AUDIO_CONTENT_TYPES,
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
    GeneratedImage,
    ImageRequest,
    ImageResponse,
    SamplingParams,
    SpeechRequest,
    SpeechResponse,
    Timings,
    TranscriptionRequest,
    TranscriptionResponse,
    Usage,
)
from byzer_like.saas.base import SaasBackend, SaasOptions
from byzer_like.saas.errors import (
    ErrorMap,
    body_message,
    connection_error,
    error_for_status,
    retry_after_seconds,
    timeout_error,
    transport_mappers,
)
from byzer_like.structured import FunctionCall, ToolCall, ToolCallDelta

OPENAI_PARAMS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop": "stop",
                 "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "seed": "seed"}
EXTRA_PARAMS = ("top_k", "min_p", "repetition_penalty")  # vLLM/SiliconFlow-style hosts take these in the body


class OpenAIOptions(SaasOptions):
    """Options of ``saas/openai`` and ``saas/official_openai``."""

    organization: str | None = Field(default=None, description="OpenAI organization id.")
    api_type: str | None = Field(default=None, description="Accepted for byzerllm compatibility; not used.")
    voice: str = Field(default="alloy", description="Default text-to-speech voice when a request names none.")
    stream_usage: bool = Field(default=True, description="Ask for usage in streams (stream_options.include_usage).")
    http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", description="The SDK's transport: aiohttp (httpx-aiohttp; measured 2x the req/s of the "
                                       "default) or httpx (the SDK's default).")
    extra_params: list[str] = Field(
        default_factory=list,
        description="Non-OpenAI sampling params this host honours, sent in the body: top_k, min_p, "
                    "repetition_penalty (vLLM, SiliconFlow, one-api). Others are refused with a clear error.")


def _status_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, openai.APIStatusError)
    body = exc.body
    param = body.get("param") if isinstance(body, dict) else None
    code = body.get("code") if isinstance(body, dict) else None
    return error_for_status(provider, exc.status_code, body_message(body, exc.message),
                            retry_after=retry_after_seconds(exc.response.headers), param=param,
                            code=code if isinstance(code, str) else None)


def _api_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, openai.APIError)
    return error_for_status(provider, None, body_message(exc.body, exc.message))


def openai_error_map(provider: str) -> ErrorMap:
    """Exception types of the ``openai`` SDK -> our errors."""
    return ErrorMap(provider, {
        openai.APIStatusError: _status_error,
        openai.APITimeoutError: timeout_error,
        openai.APIConnectionError: connection_error,
        openai.APIError: _api_error,  # e.g. an error event inside an SSE stream
        **transport_mappers(),
    })


class OpenAIBackend(SaasBackend):
    """A proxy to an OpenAI-compatible chat/embeddings API.

    Example:
        >>> spec = DeploySpec(alias="gpt", backend=BackendSpec(model_type="saas/openai",  # doctest: +SKIP
        ...     engine_kwargs={"model": "gpt-4o", "api_key": "sk-..."}))
    """

    options_model: ClassVar[type[EngineOptions]] = OpenAIOptions
    supported_params = frozenset(OPENAI_PARAMS)
    supported_structured = frozenset({"tools", "json_object", "json_schema"})
    provider = "openai"
    options: OpenAIOptions
    _session: Any = None  # the plain aiohttp session of unary chats (``plain_http``), made on first use
    _root = ""

    @classmethod
    def error_map(cls) -> ErrorMap:
        """The ``openai`` SDK's exception table."""
        return openai_error_map(cls.provider)

    def check_params(self, req: SamplingParams) -> None:
        """Like the base check, but also allowing the host's declared ``extra_params``."""
        self.supported_params = frozenset(OPENAI_PARAMS) | frozenset(self.options.extra_params)
        super().check_params(req)

    def make_client(self) -> Any:
        """``openai.AsyncOpenAI`` with our timeout and the SDK's retries off."""
        return openai.AsyncOpenAI(api_key=self.secrets.get("api_key") or "EMPTY", base_url=self.options.base_url,
                                  organization=self.options.organization, timeout=self.options.timeout,
                                  max_retries=0, http_client=sdk_http_client(self.options.http_client))

    def request_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        """The body of one chat completion request."""
        kwargs: dict[str, Any] = {"model": self.model_for(req), "stream": True,
                                  "messages": [m.model_dump(exclude_none=True) for m in req.messages],
                                  **self.params(req, OPENAI_PARAMS)}
        extra = {k: getattr(req, k) for k in self.options.extra_params if getattr(req, k, None) is not None}
        if extra:
            kwargs["extra_body"] = extra
        if self.options.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return {**kwargs, **openai_tool_fields(req)}

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One streamed chat completion; finish reason and usage go out together in the last chunk."""
        stream = await self.client.chat.completions.create(**self.request_kwargs(req))
        finish, usage = None, None
        async with stream:
            async for event in stream:
                if event.usage is not None:
                    usage = Usage(prompt_tokens=event.usage.prompt_tokens or 0,
                                  completion_tokens=event.usage.completion_tokens or 0)
                for choice in event.choices[:1]:
                    text, reasoning = choice.delta.content or "", _reasoning(choice.delta)
                    calls = [_call_delta(c) for c in choice.delta.tool_calls or []] or None
                    if text or reasoning or calls:
                        yield Chunk(text=text, reasoning=reasoning, tool_calls=calls)
                    finish = choice.finish_reason or finish
        if finish is not None:
            yield Chunk(finish_reason=_finish(finish), usage=usage or Usage())

    async def answer_once(self, req: ChatRequest) -> ChatResponse:
        """One non-streamed chat completion (the caller wants the answer in one piece: no SSE to parse).

        The body is ours and plain JSON already, so it is posted as is and the answer read as JSON: the SDK's
        per-request parameter transform, request building and response models cost more CPU than the rest of the
        proxy. On the aiohttp transport the body goes out on one kept aiohttp session (``plain_http``); otherwise
        (httpx, or a subclass with its own client such as Azure's deployment URLs) through the SDK's client, with the
        request's id as idempotency key.
        """
        start = time.perf_counter()
        body = self.request_kwargs(req)
        body.pop("stream_options", None)
        body.update(body.pop("extra_body", None) or {}, stream=False)
        if self.plain_http:
            out = await self._post_plain("/chat/completions", body)
        else:
            out = await self.client.post("/chat/completions", body=body, cast_to=object, options=make_request_options(
                idempotency_key=req.request_id, security={"bearer_auth": True}))
        choices = out.get("choices") if isinstance(out, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise UpstreamError(f"{self.provider} upstream answered without a choice")
        choice = choices[0]
        message = choice.get("message") or {}
        calls = [ToolCall(id=c.get("id") or "", function=FunctionCall(name=f.get("name") or "",
                                                                      arguments=f.get("arguments") or ""))
                 for c in message.get("tool_calls") or [] if isinstance(f := c.get("function"), dict)] or None
        used = out.get("usage") or {}
        usage = Usage(prompt_tokens=used.get("prompt_tokens") or 0,
                      completion_tokens=used.get("completion_tokens") or 0)
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        total = time.perf_counter() - start
        return ChatResponse(text=message.get("content") or "",
                            reasoning=reasoning if isinstance(reasoning, str) else "", tool_calls=calls,
                            finish_reason=_finish(choice.get("finish_reason") or "stop"),
                            usage=usage, timings=Timings(first_token_s=total, total_s=total))

    @property
    def plain_http(self) -> bool:
        """Unary chats go out on a bare aiohttp session: the aiohttp transport and the SDK's plain OpenAI client."""
        return self.options.http_client == "aiohttp" and type(self).make_client is OpenAIBackend.make_client

    async def _post_plain(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON to the API root + ``path``; the answer's JSON, or our error for its status."""
        import aiohttp

        if self._session is None:
            headers = {"Authorization": f"Bearer {self.secrets.get('api_key') or 'EMPTY'}",
                       "Content-Type": "application/json"}
            if self.options.organization:
                headers["OpenAI-Organization"] = self.options.organization
            self._session = aiohttp.ClientSession(headers=headers,
                                                  timeout=aiohttp.ClientTimeout(total=self.options.timeout))
            self._root = str(self.client.base_url).rstrip("/")  # NOTE: the SDK's resolution (OPENAI_BASE_URL too)
        async with self._session.post(self._root + path, data=json.dumps(body)) as resp:
            raw = await resp.read()
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if resp.status >= 400:
                inner = data.get("error") if isinstance(data, dict) else None
                inner = inner if isinstance(inner, dict) else {}
                code = inner.get("code")
                raise error_for_status(self.provider, resp.status, body_message(data, resp.reason or "error"),
                                       retry_after=retry_after_seconds(resp.headers), param=inner.get("param"),
                                       code=code if isinstance(code, str) else None)
            if not isinstance(data, dict):
                raise UpstreamError(f"{self.provider} upstream answered {resp.status} with a body that is not JSON")
            return data

    async def shutdown(self) -> None:
        """Close the plain HTTP session, then the SDK client."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().shutdown()

    async def embed_once(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One embeddings call (e.g. ``text-embedding-3-small``)."""
        out = await self.client.embeddings.create(model=self.options.model, input=req.input)
        vectors = [item.embedding for item in sorted(out.data, key=lambda item: item.index)]
        tokens = out.usage.prompt_tokens if out.usage is not None else 0
        return EmbeddingResponse(embeddings=vectors, usage=Usage(prompt_tokens=tokens))

    async def transcribe_once(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """One ``audio.transcriptions.create`` call (``whisper-1``); text formats come back as the raw text."""
        optional = req.model_dump(include={"language", "prompt", "temperature"}, exclude_none=True)
        out = await self.client.audio.transcriptions.create(model=self.options.model, file=(req.filename, req.audio),
                                                            response_format=req.response_format, **optional)
        if isinstance(out, str):
            return TranscriptionResponse(text=out)
        return TranscriptionResponse(text=out.text, language=getattr(out, "language", None),
                                     duration=getattr(out, "duration", None))

    async def speech_once(self, req: SpeechRequest) -> SpeechResponse:
        """One ``audio.speech.create`` call (``tts-1``)."""
        optional = {"speed": req.speed} if req.speed is not None else {}
        out = await self.client.audio.speech.create(model=self.options.model, input=req.input,
                                                    voice=req.voice or self.options.voice,
                                                    response_format=req.response_format, **optional)
        content_type = out.response.headers.get("content-type") or AUDIO_CONTENT_TYPES[req.response_format]
        return SpeechResponse(audio=out.content, content_type=content_type.split(";")[0].strip())

    async def image_once(self, req: ImageRequest) -> ImageResponse:
        """One ``images.generate`` call (``dall-e-3``)."""
        optional = req.model_dump(include={"size", "quality", "response_format", "style"}, exclude_none=True)
        out = await self.client.images.generate(model=self.options.model, prompt=req.prompt, n=req.n, **optional)
        images = [GeneratedImage(url=i.url, b64_json=i.b64_json, revised_prompt=i.revised_prompt)
                  for i in out.data or []]
        return ImageResponse(created=out.created, data=images)


def sdk_http_client(kind: str) -> Any:
    """The ``openai`` SDK's HTTP client: aiohttp's when asked for and installed, else None (the SDK's httpx)."""
    if kind == "aiohttp" and hasattr(openai, "DefaultAioHttpClient"):
        try:
            return openai.DefaultAioHttpClient()
        except RuntimeError:  # NOTE: httpx-aiohttp missing: the SDK says so; its httpx client still works
            return None
    return None


def openai_tool_fields(req: ChatRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` as OpenAI takes them (as is)."""
    out: dict[str, Any] = {}
    if req.tools is not None:
        out["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
    if req.tool_choice is not None:
        out["tool_choice"] = req.tool_choice if isinstance(req.tool_choice, str) else req.tool_choice.model_dump()
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None:
        out["response_format"] = req.response_format.openai()
    return out


def _call_delta(call: Any) -> ToolCallDelta:
    function = call.function
    return ToolCallDelta(index=call.index, id=call.id, name=function.name if function else None,
                         arguments=(function.arguments if function else None) or "")


def _reasoning(delta: Any) -> str:
    """DeepSeek-style ``reasoning_content`` (or ``reasoning``) of a delta, kept apart from the answer."""
    extra = delta.model_extra or {}
    value = extra.get("reasoning_content") or extra.get("reasoning")
    return value if isinstance(value, str) else ""


_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
           "content_filter": "content_filter"}


def _finish(reason: str) -> Any:
    return _FINISH.get(reason, "stop")
