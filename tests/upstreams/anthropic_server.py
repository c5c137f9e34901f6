"""A fake Anthropic Messages API: ``POST /v1/messages`` as JSON or SSE with Anthropic's event types."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.upstreams.server import UpstreamServer, count_tokens, cut, pieces, tool_arguments, words_of

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    results = [f"{p['tool_use_id']}: {_text(p['content'])}" for p in content if p["type"] == "tool_result"]
    if results:
        return " ".join(results)
    text = " ".join(p.get("text", "") for p in content if p["type"] == "text")
    images = sum(p["type"] == "image" for p in content)
    return f"{text} [{images} image(s)]" if images else text


class AnthropicUpstream(UpstreamServer):
    """Anthropic's wire protocol on 127.0.0.1 (``x-api-key``; errors as ``{"type": "error", "error": {...}}``)."""

    def routes(self) -> list[tuple[str, str, Any]]:
        """The one route."""
        return [("POST", "/v1/messages", self.messages)]

    def authorized(self, request: web.Request) -> bool:
        """Anthropic takes the key in ``x-api-key`` (SDK 2.x sends ``Authorization: Bearer``; both accepted)."""
        return self.api_key in (request.headers.get("x-api-key"),
                                request.headers.get("Authorization", "").removeprefix("Bearer "))

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """Anthropic's error shape."""
        message = "invalid x-api-key" if status == 401 else message
        payload = body or {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                                      "message": message}}
        return web.json_response(payload, status=status, headers=headers)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: replies ``echo: <last text>``, system prompt echoed in brackets if present."""
        early, fault, body = await self.admit(request)
        if early is not None:
            return early
        call = tool_use_for(body)
        if call is not None:
            return await self._tool_use(request, body, call)
        text = "echo: " + _text(body["messages"][-1]["content"])
        words = words_of(text)
        limit = min(len(words), body["max_tokens"])
        stop = "max_tokens" if limit < len(words) else "end_turn"
        usage_in = sum(count_tokens(_text(m["content"])) for m in body["messages"])
        if not body.get("stream"):
            return web.json_response({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                                      "content": [{"type": "text", "text": "".join(words[:limit])}],
                                      "stop_reason": stop, "stop_sequence": None,
                                      "usage": {"input_tokens": usage_in, "output_tokens": limit}})
        return await self._stream(request, body, words[:limit], stop, usage_in, fault.cut_after if fault else None)

    async def _tool_use(self, request: web.Request, body: dict[str, Any], call: dict[str, Any]) -> web.StreamResponse:
        """Answer with one tool_use block (streamed: the block with id and name, then input_json_delta pieces)."""
        usage = {"input_tokens": 3, "output_tokens": 5}
        if not body.get("stream"):
            block = {**call, "input": json.loads(call["input"])}
            return web.json_response({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                                      "content": [block], "stop_reason": "tool_use", "stop_sequence": None,
                                      "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        await resp.write(_event("message_start", {"message": message}))
        block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        await resp.write(_event("content_block_start", {"index": 0, "content_block": block}))
        for piece in pieces(call["input"]):
            await resp.write(_event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                                  "partial_json": piece}}))
        await resp.write(_event("content_block_stop", {"index": 0}))
        await resp.write(_event("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                                  "usage": {"output_tokens": 5}}))
        await resp.write(_event("message_stop", {}))
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, body: dict[str, Any], words: list[str], stop: str, usage_in: int,
                      cut_after: int | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage_in, "output_tokens": 1}}
        await resp.write(_event("message_start", {"message": message}))
        await resp.write(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        await resp.write(_event("ping", {}))
        for i, word in enumerate(words):
            if cut_after is not None and i == cut_after:
                cut(resp, request)
                return resp
            await resp.write(_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                                  "text": word}}))
        await resp.write(_event("content_block_stop", {"index": 0}))
        await resp.write(_event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                                  "usage": {"output_tokens": len(words)}}))
        await resp.write(_event("message_stop", {}))
        await resp.write_eof()
        return resp


def tool_use_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool_use this fake answers with (``input`` as JSON text): when tools are given, tool_choice allows a call
    and the last turn holds no tool_result. It uses the named tool, else the first."""
    tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
    last = body["messages"][-1]["content"]
    if not tools or choice["type"] == "none" or (isinstance(last, list) and last[-1]["type"] == "tool_result"):
        return None
    name = choice["name"] if choice["type"] == "tool" else tools[0]["name"]
    return {"type": "tool_use", "id": "toolu_up_1", "name": name, "input": tool_arguments(name, _text(last))}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
