"""``saas/claude``: the Anthropic Messages API through the ``anthropic`` SDK's async client.

System messages are lifted into ``system``; OpenAI image parts (data URLs or http URLs) become Anthropic image
blocks; the answer streams from the SDK's raw events (``message_start`` → ``content_block_delta`` →
``message_delta`` → ``message_stop``), with ``thinking_delta`` kept apart as reasoning and usage from the events.

Example:
    byzer-like deploy --pretrained_model_type saas/claude --model sonnet_3_5_chat \\
        --infer_params saas.api_key=${ANTHROPIC_API_KEY} saas.model=claude-3-5-sonnet-20240620
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, ClassVar

import anthropic
from pydantic import Field

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import InvalidRequestError, UnsupportedError
from byzer_like.protocol import ChatRequest, Chunk, Message, Usage
from byzer_like.saas.base import SaasBackend, SaasOptions
from byzer_like.structured import ToolCallDelta
from byzer_like.saas.errors import ErrorMap, body_message, connection_error, error_for_status, \
    retry_after_seconds, timeout_error, transport_mappers

CLAUDE_PARAMS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "stop": "stop_sequences"}
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "pause_turn": "stop"}
FORMAT_TOOL = "json_answer"  # the forced tool that carries a JSON response_format


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
    supported_structured = frozenset({"tools", "json_object", "json_schema"})
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
                                  "messages": to_claude_messages([m for m in req.messages
                                                                  if m.role not in ("system", "developer")]),
                                  **self.params(req, {"max_tokens": "max_tokens", "stop": "stop_sequences"})}
        # NOTE: newer SDKs dropped temperature/top_p/top_k from create()'s signature; the API still takes them.
        sampling = self.params(req, {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"})
        if sampling:
            kwargs["extra_body"] = sampling
        if system:
            kwargs["system"] = system
        return {**kwargs, **claude_tool_fields(req)}

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One streamed Messages call, read from the SDK's raw events."""
        stream = await self.client.messages.create(stream=True, **self.request_kwargs(req))
        reader = _EventReader(as_text=FORMAT_TOOL if _format_schema(req) is not None else None)
        async with stream:
            async for event in stream:
                chunk = reader.read(event)
                if chunk is not None:
                    yield chunk


class _EventReader:
    """Anthropic stream events -> chunks: text, thinking, and tool_use blocks as tool call pieces.

    Args:
        as_text: A tool whose input is the answer itself (the forced tool behind ``response_format``).
    """

    def __init__(self, as_text: str | None) -> None:
        self.as_text = as_text
        self.usage, self.finish = Usage(), None
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.text_blocks: set[int] = set()

    def read(self, event: Any) -> Chunk | None:
        if event.type == "message_start":
            self.usage.prompt_tokens = event.message.usage.input_tokens or 0
        elif event.type == "content_block_start" and event.content_block.type == "tool_use":
            return self._tool_start(event.index, event.content_block)
        elif event.type == "content_block_delta":
            return self._delta(event.index, event.delta)
        elif event.type == "message_delta":
            self.finish = STOP_REASONS.get(event.delta.stop_reason or "", "stop")
            self.usage.completion_tokens = event.usage.output_tokens or 0
        elif event.type == "message_stop":
            finish = "stop" if self.finish == "tool_calls" and not self.tools else self.finish
            return Chunk(finish_reason=finish or "stop", usage=self.usage)  # type: ignore[arg-type]
        return None

    def _tool_start(self, index: int, block: Any) -> Chunk | None:
        if block.name == self.as_text:
            self.text_blocks.add(index)
            return None
        self.tools[index] = len(self.tools)
        return Chunk(tool_calls=[ToolCallDelta(index=self.tools[index], id=block.id, name=block.name)])

    def _delta(self, index: int, delta: Any) -> Chunk | None:
        if delta.type == "text_delta":
            return Chunk(text=delta.text)
        if delta.type == "thinking_delta":
            return Chunk(reasoning=delta.thinking)
        if delta.type == "input_json_delta" and index in self.text_blocks:
            return Chunk(text=delta.partial_json)
        if delta.type == "input_json_delta" and index in self.tools:
            return Chunk(tool_calls=[ToolCallDelta(index=self.tools[index], arguments=delta.partial_json)])
        return None


def claude_tool_fields(req: ChatRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` in Anthropic's shape; a JSON ``response_format`` becomes a forced tool.

    Raises:
        UnsupportedError: ``response_format`` together with tools, or a schema whose top level is not an object.
    """
    schema = _format_schema(req)
    if schema is not None:
        if req.uses_tools():
            raise UnsupportedError("saas/claude cannot combine tools with response_format", param="response_format")
        if schema.get("type", "object") != "object":
            raise UnsupportedError("saas/claude takes response_format schemas whose top level is an object",
                                   param="response_format")
        return {"tools": [{"name": FORMAT_TOOL, "description": "Give the answer as this tool's input.",
                           "input_schema": schema}], "tool_choice": {"type": "tool", "name": FORMAT_TOOL}}
    if not req.tools:
        return {}
    tools = [{"name": t.function.name, "description": t.function.description or "",
              "input_schema": t.function.parameters_schema()} for t in req.tools]
    choice = req.tool_choice
    named = {"type": "tool", "name": choice.name} if choice is not None and not isinstance(choice, str) else None
    out_choice = named or {"type": {"required": "any"}.get(choice or "auto", choice or "auto")}
    if req.parallel_tool_calls is False and out_choice["type"] != "none":
        out_choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": out_choice}


def _format_schema(req: ChatRequest) -> dict[str, Any] | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    return fmt.schema_dict() or {"type": "object"}


def to_claude_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI-style messages (no system) as Anthropic messages; consecutive same-role turns merge (tool results)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        converted = to_claude(message)
        if out and out[-1]["role"] == converted["role"]:
            out[-1] = {"role": converted["role"], "content": _blocks(out[-1]) + _blocks(converted)}
        else:
            out.append(converted)
    return out


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def to_claude(message: Message) -> dict[str, Any]:
    """One OpenAI-style message as an Anthropic message: tool calls become tool_use, tool results tool_result."""
    if message.role == "tool":
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                                             "content": message.text()}]}
    if message.role not in ("user", "assistant"):
        raise UnsupportedError(f"saas/claude cannot take a '{message.role}' message", param="messages")
    if message.tool_calls:
        text = [{"type": "text", "text": message.text()}] if message.text() else []
        return {"role": "assistant", "content": text + [
            {"type": "tool_use", "id": c.id, "name": c.function.name, "input": _arguments(c.function.arguments)}
            for c in message.tool_calls]}
    if isinstance(message.content, str) or message.content is None:
        return {"role": message.role, "content": message.content or ""}
    return {"role": message.role, "content": [_part(p) for p in message.content]}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        raise InvalidRequestError("a tool call's arguments are not JSON", param="messages") from None


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
