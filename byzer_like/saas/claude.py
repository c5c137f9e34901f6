"""``saas/claude``: the Anthropic Messages API through the ``anthropic`` SDK's async client.

System messages are lifted into ``system``; OpenAI image parts (data URLs or http URLs) become Anthropic image
blocks; the answer streams from the SDK's raw events (``message_start`` → ``content_block_delta`` →
``message_delta`` → ``message_stop``), with ``thinking_delta`` kept apart as reasoning and usage from the events.

Example:
    byzer-like deploy --pretrained_model_type saas/claude --model sonnet_3_5_chat \\
        --infer_params saas.api_key=${ANTHROPIC_API_KEY} saas.model=claude-3-5-sonnet-20240620
"""

from __future__ import annotations

from typing import Any, AsyncIterator, ClassVar

import anthropic
from pydantic import Field

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import UnsupportedError
from byzer_like.protocol import ChatRequest, Chunk, Message, Usage
from byzer_like.saas.base import SaasBackend, SaasOptions
from byzer_like.saas.errors import ErrorMap, body_message, connection_error, error_for_status, \
    retry_after_seconds, timeout_error, transport_mappers

CLAUDE_PARAMS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "stop": "stop_sequences"}
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "pause_turn": "stop"}


class ClaudeOptions(SaasOptions):
    """Options of ``saas/claude``."""

    max_tokens: int = Field(default=4096, ge=1, description="Default max_tokens (the Messages API requires one).")


def _status_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, anthropic.APIStatusError)
    body = exc.body
    kind = body.get("error", {}).get("type") if isinstance(body, dict) and isinstance(body.get("error"), dict) \
        else None
    return error_for_status(provider, exc.status_code, body_message(body, exc.message),
                            retry_after=retry_after_seconds(exc.response.headers), code=kind)


def _api_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, anthropic.APIError)
    return error_for_status(provider, None, body_message(exc.body, exc.message))


class ClaudeBackend(SaasBackend):
    """A proxy to Anthropic's Messages API.

    Example:
        >>> BackendSpec(model_type="saas/claude", engine_kwargs={"model": "claude-3-5-sonnet-20240620"})
    """

    options_model: ClassVar[type[EngineOptions]] = ClaudeOptions
    supported_params = frozenset(CLAUDE_PARAMS)
    provider = "claude"
    options: ClaudeOptions

    @classmethod
    def error_map(cls) -> ErrorMap:
        """The ``anthropic`` SDK's exception table."""
        return ErrorMap(cls.provider, {
            anthropic.APIStatusError: _status_error,
            anthropic.APITimeoutError: timeout_error,
            anthropic.APIConnectionError: connection_error,
            anthropic.APIError: _api_error,
            **transport_mappers(),
        })

    def make_client(self) -> Any:
        """``anthropic.AsyncAnthropic`` with our timeout and the SDK's retries off."""
        return anthropic.AsyncAnthropic(api_key=self.secrets.get("api_key") or "EMPTY", base_url=self.options.base_url,
                                        timeout=self.options.timeout, max_retries=0)

    def request_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        """The Messages API body: system lifted out, content converted, params renamed."""
        system = "\n\n".join(m.text() for m in req.messages if m.role in ("system", "developer"))
        kwargs: dict[str, Any] = {"model": self.model_for(req), "max_tokens": self.options.max_tokens,
                                  "messages": [to_claude(m) for m in req.messages if m.role not in ("system",
                                                                                                    "developer")],
                                  **self.params(req, {"max_tokens": "max_tokens", "stop": "stop_sequences"})}
        # NOTE: newer SDKs dropped temperature/top_p/top_k from create()'s signature; the API still takes them.
        sampling = self.params(req, {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"})
        if sampling:
            kwargs["extra_body"] = sampling
        if system:
            kwargs["system"] = system
        return kwargs

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One streamed Messages call, read from the SDK's raw events."""
        stream = await self.client.messages.create(stream=True, **self.request_kwargs(req))
        usage, finish = Usage(), None
        async with stream:
            async for event in stream:
                if event.type == "message_start":
                    usage.prompt_tokens = event.message.usage.input_tokens or 0
                elif event.type == "content_block_delta":
                    chunk = _delta_chunk(event.delta)
                    if chunk is not None:
                        yield chunk
                elif event.type == "message_delta":
                    finish = STOP_REASONS.get(event.delta.stop_reason or "", "stop")
                    usage.completion_tokens = event.usage.output_tokens or 0
                elif event.type == "message_stop":
                    yield Chunk(finish_reason=finish or "stop", usage=usage)  # type: ignore[arg-type]


def _delta_chunk(delta: Any) -> Chunk | None:
    if delta.type == "text_delta":
        return Chunk(text=delta.text)
    if delta.type == "thinking_delta":
        return Chunk(reasoning=delta.thinking)
    return None


def to_claude(message: Message) -> dict[str, Any]:
    """One OpenAI-style message as an Anthropic message (tool role unsupported)."""
    if message.role not in ("user", "assistant"):
        raise UnsupportedError(f"saas/claude cannot take a '{message.role}' message", param="messages")
    if isinstance(message.content, str) or message.content is None:
        return {"role": message.role, "content": message.content or ""}
    return {"role": message.role, "content": [_part(p) for p in message.content]}


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "text":
        return {"type": "text", "text": part.get("text", "")}
    if part.get("type") == "image_url":
        url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url", "")
        if url.startswith("data:"):
            media, _, data = url[5:].partition(";base64,")
            return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UnsupportedError(f"saas/claude cannot take a '{part.get('type')}' content part", param="messages")
