"""A fake AWS Bedrock runtime: Converse (JSON) and ConverseStream (binary ``application/vnd.amazon.eventstream``).

Checks that the SigV4 ``Authorization`` header names the expected access key; errors carry ``x-amzn-ErrorType``
as AWS's rest-json protocol does.
"""

from __future__ import annotations

import binascii
import json
import struct
from typing import Any

from aiohttp import web

from tests.upstreams.server import UpstreamServer, count_tokens, cut, pieces, tool_arguments, words_of

AWS_ERRORS = {401: ("UnrecognizedClientException", 403), 429: ("ThrottlingException", 429),
              500: ("InternalServerException", 500), 503: ("ServiceUnavailableException", 503)}


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message: prelude, prelude CRC, string headers, JSON payload, message CRC."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        n, v = name.encode(), value.encode()
        headers += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def _text(message: dict[str, Any]) -> str:
    results = [f"{b['toolResult']['toolUseId']}: {_text(b['toolResult'])}" for b in message["content"]
               if "toolResult" in b]
    if results:
        return " ".join(results)
    texts = [b["text"] for b in message["content"] if "text" in b]
    images = sum("image" in b for b in message["content"])
    return " ".join(texts) + (f" [{images} image(s)]" if images else "")


def tool_use_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """The toolUse this fake answers with (``input`` as JSON text): when a toolConfig is given and the last turn
    holds no toolResult. It uses the named tool (toolChoice.tool), else the first."""
    config = body.get("toolConfig")
    last = body["messages"][-1]
    if not config or any("toolResult" in b for b in last["content"]):
        return None
    forced = (config.get("toolChoice") or {}).get("tool")
    name = forced["name"] if forced else config["tools"][0]["toolSpec"]["name"]
    return {"toolUseId": "tooluse_up_1", "name": name, "input": tool_arguments(name, _text(last))}


class BedrockUpstream(UpstreamServer):
    """Bedrock runtime's Converse wire protocol on 127.0.0.1; ``api_key`` is the expected access key id."""

    def routes(self) -> list[tuple[str, str, Any]]:
        """Converse and ConverseStream."""
        return [("POST", "/model/{model_id}/converse", self.converse),
                ("POST", "/model/{model_id}/converse-stream", self.converse_stream)]

    def authorized(self, request: web.Request) -> bool:
        """SigV4: the credential scope starts with the access key id."""
        return f"Credential={self.api_key}/" in request.headers.get("Authorization", "")

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """AWS rest-json errors: the code in ``x-amzn-ErrorType``, the text in ``message``."""
        code, http = AWS_ERRORS.get(status, ("InternalServerException", status))
        if status == 401:
            message = "The security token included in the request is invalid."
        return web.json_response(body or {"message": message}, status=http,
                                 headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/",
                                          **(headers or {})})

    def _answer(self, body: dict[str, Any]) -> tuple[list[str], str, dict[str, int]]:
        words = words_of("echo: " + _text(body["messages"][-1]))
        limit = (body.get("inferenceConfig") or {}).get("maxTokens") or len(words)
        stop = "max_tokens" if limit < len(words) else "end_turn"
        prompt = sum(count_tokens(_text(m)) for m in body["messages"])
        usage = {"inputTokens": prompt, "outputTokens": min(limit, len(words)),
                 "totalTokens": prompt + min(limit, len(words))}
        return words[:limit], stop, usage

    async def _tool_use(self, resp: web.StreamResponse, call: dict[str, Any], usage: dict[str, int]) -> Any:
        """The toolUse block: its start (id, name), then the input JSON in pieces; stopReason tool_use."""
        start = {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"]}}
        await resp.write(encode_event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        for piece in pieces(call["input"]):
            await resp.write(encode_event("contentBlockDelta", {"contentBlockIndex": 0,
                                                                "delta": {"toolUse": {"input": piece}}}))
        await resp.write(encode_event("contentBlockStop", {"contentBlockIndex": 0}))
        await resp.write(encode_event("messageStop", {"stopReason": "tool_use"}))
        await resp.write(encode_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
        await resp.write_eof()
        return resp

    async def converse(self, request: web.Request) -> web.StreamResponse:
        """``POST /model/{id}/converse``."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        words, stop, usage = self._answer(body)
        return web.json_response({"output": {"message": {"role": "assistant", "content": [{"text": "".join(words)}]}},
                                  "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}})

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        """``POST /model/{id}/converse-stream``: the binary event stream."""
        early, fault, body = await self.admit(request)
        if early is not None:
            return early
        words, stop, usage = self._answer(body)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        await resp.write(encode_event("messageStart", {"role": "assistant"}))
        call = tool_use_for(body)
        if call is not None:
            return await self._tool_use(resp, call, usage)
        for i, word in enumerate(words):
            if fault is not None and fault.cut_after == i:
                cut(resp, request)
                return resp
            await resp.write(encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}}))
        await resp.write(encode_event("contentBlockStop", {"contentBlockIndex": 0}))
        await resp.write(encode_event("messageStop", {"stopReason": stop}))
        await resp.write(encode_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
        await resp.write_eof()
        return resp
