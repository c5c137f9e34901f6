"""A fake DashScope: text generation and multimodal generation (JSON or SSE), text-embedding."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.upstreams.server import UpstreamServer, count_tokens, cut, words_of


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = " ".join(i["text"] for i in content if "text" in i)
    images = sum("image" in i for i in content)
    return texts + (f" [{images} image(s)]" if images else "")


class DashScopeUpstream(UpstreamServer):
    """DashScope's native protocol on 127.0.0.1 (``Authorization: Bearer``; errors ``{"code", "message"}``)."""

    def routes(self) -> list[tuple[str, str, Any]]:
        """Generation, multimodal generation and embeddings."""
        return [("POST", "/api/v1/services/aigc/text-generation/generation", self.generate),
                ("POST", "/api/v1/services/aigc/multimodal-generation/generation", self.generate),
                ("POST", "/api/v1/services/embeddings/text-embedding/text-embedding", self.embed)]

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """DashScope's error shape."""
        code = {401: "InvalidApiKey", 429: "Throttling.RateQuota"}.get(status, "InternalError")
        message = "Invalid API-key provided." if status == 401 else message
        return web.json_response(body or {"code": code, "message": message, "request_id": "r1"}, status=status,
                                 headers=headers)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """Replies ``echo: <last text>``; SSE when ``X-DashScope-SSE: enable``."""
        early, fault, body = await self.admit(request)
        if early is not None:
            return early
        words = words_of("echo: " + _text(body["input"]["messages"][-1]["content"]))
        limit = body.get("parameters", {}).get("max_tokens") or len(words)
        finish = "length" if limit < len(words) else "stop"
        words = words[:limit]
        usage = {"input_tokens": sum(count_tokens(_text(m["content"])) for m in body["input"]["messages"]),
                 "output_tokens": len(words)}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            if fault is not None and fault.cut_after == i:
                cut(resp, request)
                return resp
            last = i == len(words) - 1
            data = {"output": {"choices": [{"message": {"role": "assistant", "content": word},
                                            "finish_reason": finish if last else "null"}]},
                    "usage": usage, "request_id": "r1"}
            await resp.write(f"id:{i + 1}\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(data)}\n\n".encode())
        await resp.write_eof()
        return resp

    async def embed(self, request: web.Request) -> web.StreamResponse:
        """One 3-dim vector per text."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        texts = body["input"]["texts"]
        rows = [{"text_index": i, "embedding": [float(len(t)), float(t.count(" ")), 0.5]} for i, t in enumerate(texts)]
        return web.json_response({"output": {"embeddings": rows}, "usage": {"total_tokens": len(texts)},
                                  "request_id": "r1"})
