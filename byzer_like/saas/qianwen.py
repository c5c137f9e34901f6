"""``saas/qianwen`` and ``saas/qianwen_vl``: Alibaba DashScope's native REST + SSE protocol over ``httpx``.

(The ``dashscope`` SDK is synchronous at heart; its documented wire format is small, so we speak it with an async
``httpx`` client.) Chat streams with ``incremental_output`` and ``result_format=message``; ``text-embedding-v2``
goes to the text-embedding service; ``qianwen_vl`` sends content as DashScope's ``[{"image": url}, {"text": ...}]``
to the multimodal service.

Example:
    byzer-like deploy --pretrained_model_type saas/qianwen --model qianwen_chat \\
        --infer_params saas.api_key=${MODEL_QIANWEN_TOKEN} saas.model=qwen1.5-32b-chat
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, ClassVar

import httpx

from byzer_like.errors import UnsupportedError
from byzer_like.protocol import ChatRequest, Chunk, EmbeddingRequest, EmbeddingResponse, Message, Usage
from byzer_like.saas.base import SaasBackend
from byzer_like.saas.errors import ErrorMap, error_for_status, retry_after_seconds, transport_mappers
from byzer_like.structured import ToolCallDelta

DEFAULT_BASE = "https://dashscope.aliyuncs.com"
CHAT_PATH = "/api/v1/services/aigc/text-generation/generation"
VL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
EMBED_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
QWEN_PARAMS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
               "seed": "seed", "stop": "stop", "repetition_penalty": "repetition_penalty",
               "presence_penalty": "presence_penalty"}


class DashScopeStatusError(Exception):
    """A DashScope error answer (HTTP status or an SSE ``error`` event), raised inside the proxy only."""

    def __init__(self, status: int | None, code: str, message: str, headers: httpx.Headers | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.text, self.headers = status, code, message, headers


def _status_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, DashScopeStatusError)
    status = exc.status or {"Throttling": 429, "InvalidApiKey": 401}.get(exc.code.split(".")[0])
    return error_for_status(provider, status, f"{exc.code}: {exc.text}", code=exc.code,
                            retry_after=retry_after_seconds(exc.headers))


class QianwenBackend(SaasBackend):
    """A proxy to DashScope (Qwen chat and ``text-embedding-v2``).

    Example:
        >>> BackendSpec(model_type="saas/qianwen", engine_kwargs={"model": "qwen-max"})
    """

    supported_params = frozenset(QWEN_PARAMS)
    supported_structured = frozenset({"tools", "json_object", "json_schema"})
    provider = "qianwen"
    chat_path: ClassVar[str] = CHAT_PATH

    @classmethod
    def error_map(cls) -> ErrorMap:
        """DashScope answers and httpx's transport errors."""
        return ErrorMap(cls.provider, {DashScopeStatusError: _status_error, **transport_mappers()})

    def make_client(self) -> Any:
        """An async ``httpx`` client with the key in ``Authorization``."""
        return httpx.AsyncClient(base_url=(self.options.base_url or DEFAULT_BASE).rstrip("/"),
                                 timeout=self.options.timeout,
                                 headers={"Authorization": f"Bearer {self.secrets.get('api_key') or ''}"})

    def to_message(self, message: Message) -> dict[str, Any]:
        """A message in DashScope's text-generation shape (OpenAI's tool_calls / tool_call_id as they are)."""
        out: dict[str, Any] = {"role": message.role, "content": message.text()}
        if message.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in message.tool_calls]
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
        return out

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One SSE generation call; ``incremental_output`` makes each event a delta."""
        body = {"model": self.model_for(req), "input": {"messages": [self.to_message(m) for m in req.messages]},
                "parameters": {"result_format": "message", "incremental_output": True,
                               **self.params(req, QWEN_PARAMS), **dashscope_tool_fields(req)}}
        headers = {"X-DashScope-SSE": "enable", "Accept": "text/event-stream"}
        async with self.client.stream("POST", self.chat_path, json=body, headers=headers) as resp:
            await _raise_for_status(resp)
            async for data in _sse_data(resp):
                for chunk in _chunks(data):
                    yield chunk

    async def embed_once(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One text-embedding call."""
        body = {"model": self.options.model, "input": {"texts": req.input}, "parameters": {"text_type": "document"}}
        resp = await self.client.post(EMBED_PATH, json=body)
        await _raise_for_status(resp)
        data = resp.json()
        rows = sorted(data["output"]["embeddings"], key=lambda row: row["text_index"])
        return EmbeddingResponse(embeddings=[row["embedding"] for row in rows],
                                 usage=Usage(prompt_tokens=data.get("usage", {}).get("total_tokens", 0)))


class QianwenVLBackend(QianwenBackend):
    """DashScope's multimodal generation (``qwen-vl-max``): OpenAI image parts become ``{"image": url}``."""

    provider = "qianwen_vl"
    chat_path = VL_PATH
    supported_structured = frozenset()  # the multimodal service: no tools or formats here

    def to_message(self, message: Message) -> dict[str, Any]:
        """Content as DashScope's list of ``{"text"}`` / ``{"image"}`` items."""
        if isinstance(message.content, str) or message.content is None:
            return {"role": message.role, "content": [{"text": message.content or ""}]}
        items = [{"image": p["image_url"]["url"]} if p.get("type") == "image_url" else {"text": p.get("text", "")}
                 for p in message.content]
        return {"role": message.role, "content": items}


async def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    raw = await resp.aread()
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"code": str(resp.status_code), "message": raw.decode(errors="replace")[:200]}
    raise DashScopeStatusError(resp.status_code, data.get("code", ""), data.get("message", ""), resp.headers)


async def _sse_data(resp: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each SSE event; an ``error`` event raises."""
    event = None
    async for line in resp.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            if event == "error" or ("code" in data and "output" not in data):
                raise DashScopeStatusError(None, data.get("code", "error"), data.get("message", ""))
            yield data


def dashscope_tool_fields(req: ChatRequest) -> dict[str, Any]:
    """DashScope's ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` / ``response_format`` (OpenAI's shapes).

    Raises:
        UnsupportedError: ``tool_choice: required`` (DashScope has auto, none or a named function).
    """
    out: dict[str, Any] = {}
    if req.tools:
        out["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
    if req.tool_choice == "required":
        raise UnsupportedError("saas/qianwen has no tool_choice 'required'; name the function instead",
                               param="tool_choice")
    if req.tool_choice is not None:
        out["tool_choice"] = req.tool_choice if isinstance(req.tool_choice, str) else req.tool_choice.model_dump()
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None and req.response_format.type != "text":
        out["response_format"] = req.response_format.openai()
    return out


def _call_delta(call: dict[str, Any]) -> ToolCallDelta:
    function = call.get("function") or {}
    return ToolCallDelta(index=call.get("index", 0), id=call.get("id") or None, name=function.get("name") or None,
                         arguments=function.get("arguments") or "")


def _chunks(data: dict[str, Any]) -> list[Chunk]:
    choice = data["output"]["choices"][0]
    message = choice.get("message", {})
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(item.get("text", "") for item in content)
    calls = [_call_delta(c) for c in message.get("tool_calls") or []] or None
    reasoning = message.get("reasoning_content") or ""
    out = [Chunk(text=content, reasoning=reasoning, tool_calls=calls)] if content or reasoning or calls else []
    finish = choice.get("finish_reason")
    if finish and finish != "null":
        raw = data.get("usage", {})
        usage = Usage(prompt_tokens=raw.get("input_tokens", 0), completion_tokens=raw.get("output_tokens", 0))
        reason = {"length": "length", "tool_calls": "tool_calls"}.get(finish, "stop")
        out.append(Chunk(finish_reason=reason, usage=usage))  # type: ignore[arg-type]
    return out
