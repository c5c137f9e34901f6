"""A fake OpenAI-compatible API: chat completions (JSON and SSE, usage, reasoning_content), embeddings, audio
transcriptions and speech, image generation. Reusable by the gateway tests and the SaaS bench.

Run standalone for benches: ``python -m tests.upstreams.openai_server --port 18080``.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Any

from aiohttp import web

from tests.upstreams.server import UpstreamServer, count_tokens, cut, pieces, tool_arguments, words_of


def reply_for(body: dict[str, Any]) -> str:
    """The deterministic answer: ``echo: <last message text>`` (after a tool result: ``echo: <its id>: <text>``)."""
    last = body["messages"][-1]
    content = last.get("content") or ""
    if last["role"] == "tool":
        content = f"{last['tool_call_id']}: {content}"
    if isinstance(content, list):
        text = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        images = sum(p.get("type") == "image_url" for p in content)
        content = f"{text} [{images} image(s)]" if images else text
    return f"echo: {content}"


def tool_call_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """The call this fake makes: when tools are given, tool_choice allows a call and the last turn is not a tool
    result. It calls the named tool (or the first one) with :func:`tool_arguments`."""
    tools, choice = body.get("tools") or [], body.get("tool_choice", "auto")
    if not tools or choice == "none" or body["messages"][-1]["role"] == "tool":
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    text = body["messages"][-1].get("content") or ""
    return {"id": "call_up_1", "type": "function",
            "function": {"name": name, "arguments": tool_arguments(name, text if isinstance(text, str) else "")}}


def prompt_tokens(body: dict[str, Any]) -> int:
    """Words over every message's text."""
    return sum(count_tokens(m["content"] if isinstance(m.get("content"), str) else "x") for m in body["messages"])


class OpenAIUpstream(UpstreamServer):
    """OpenAI's wire protocol on 127.0.0.1 (paths under ``/v1``).

    A model whose name contains ``reasoner`` streams ``reasoning_content`` before the answer.
    """

    def routes(self) -> list[tuple[str, str, Any]]:
        """The OpenAI routes this fake serves."""
        return [("POST", "/v1/chat/completions", self.chat), ("POST", "/v1/embeddings", self.embeddings),
                ("POST", "/v1/audio/transcriptions", self.transcribe), ("POST", "/v1/audio/speech", self.speech),
                ("POST", "/v1/images/generations", self.images), ("GET", "/v1/models", self.models),
                ("POST", "/openai/deployments/{deployment}/chat/completions", self.chat),
                ("POST", "/openai/deployments/{deployment}/embeddings", self.embeddings),
                ("POST", "/openai/deployments/{deployment}/audio/transcriptions", self.transcribe),
                ("POST", "/openai/deployments/{deployment}/audio/speech", self.speech),
                ("POST", "/openai/deployments/{deployment}/images/generations", self.images)]

    def authorized(self, request: web.Request) -> bool:
        """OpenAI's ``Authorization: Bearer``, or Azure's ``api-key`` header."""
        return super().authorized(request) or request.headers.get("api-key") == self.api_key

    async def models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``."""
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        early, fault, body = await self.admit(request)
        if early is not None:
            return early
        call = tool_call_for(body)
        if call is not None:
            return await self._tool_call(request, body, call)
        text = reply_for(body)
        words = words_of(text)[: body.get("max_tokens") or None]
        finish = "length" if len(words) < len(words_of(text)) else "stop"
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": len(words),
                 "total_tokens": prompt_tokens(body) + len(words)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            if "reasoner" in body["model"]:
                message["reasoning_content"] = "thinking..."
            payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                       "model": body["model"], "usage": usage,
                       "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
            if fault and fault.cut_after is not None:  # half the JSON body, then the connection drops
                data = json.dumps(payload).encode()
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = len(data)
                await resp.prepare(request)
                await resp.write(data[: len(data) // 2])
                cut(resp, request)
                return resp
            return web.json_response(payload)
        return await self._stream(request, body, words, finish, usage, fault.cut_after if fault else None)

    async def _tool_call(self, request: web.Request, body: dict[str, Any], call: dict[str, Any]) -> web.StreamResponse:
        """Answer with one tool call (streamed: id and name first, then the arguments in pieces)."""
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": 5, "total_tokens": prompt_tokens(body) + 5}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                                      "model": body["model"], "usage": usage,
                                      "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        await resp.write(_sse(_chunk(body, {"role": "assistant", "content": None, "tool_calls": [head]}, None)))
        for piece in pieces(call["function"]["arguments"]):
            await resp.write(_sse(_chunk(body, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)))
        await resp.write(_sse(_chunk(body, {}, "tool_calls")))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_sse({**_chunk(body, {}, None), "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, body: dict[str, Any], words: list[str], finish: str,
                      usage: dict[str, int], cut_after: int | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        deltas = [{"reasoning_content": "thinking..."}] if "reasoner" in body["model"] else []
        deltas += [{"content": w} for w in words]
        for i, delta in enumerate(deltas):
            if cut_after is not None and i == cut_after:
                cut(resp, request)
                return resp
            await resp.write(_sse(_chunk(body, delta, None)))
        await resp.write(_sse(_chunk(body, {}, finish)))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_sse({**_chunk(body, {}, None), "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``: a 4-dim vector per text."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(texts)]
        tokens = sum(count_tokens(t) for t in texts)
        return web.json_response({"object": "list", "model": body["model"], "data": data,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/audio/transcriptions`` (multipart): the "transcript" says how many bytes arrived."""
        if not self.authorized(request):
            return self.error_response(401, "Incorrect API key provided")
        form = await request.post()
        audio = form["file"]
        size = len(audio.file.read()) if hasattr(audio, "file") else len(str(audio))
        fields = {k: v for k, v in form.items() if k != "file"}
        name = getattr(audio, "filename", None)
        self.received.append(_received(request, {**fields, "bytes": size, "filename": name}))
        text = f"transcript of {size} bytes"
        fmt = form.get("response_format", "json")
        if fmt in ("text", "srt", "vtt"):
            return web.Response(text=text, content_type="text/plain")
        extra = {"language": form.get("language") or "english", "duration": 1.5} if fmt == "verbose_json" else {}
        return web.json_response({"text": text, **extra})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/audio/speech``: fake mp3 bytes."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        return web.Response(body=b"ID3" + body["input"].encode(), content_type="audio/mpeg")

    async def images(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/images/generations``: one tiny base64 "image"."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        data = base64.b64encode(b"PNG:" + body["prompt"].encode()).decode()
        return web.json_response({"created": int(time.time()), "data": [{"b64_json": data,
                                                                          "revised_prompt": body["prompt"]}]})


def _received(request: web.Request, body: Any) -> Any:
    from tests.upstreams.server import Received

    return Received(request.path, dict(request.headers), body)


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(c in "aeiou" for c in text)), float(text.count(" ")), 1.0]


def main() -> None:
    """Serve until killed (for benches in another process)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-test-secret-123456")
    args = parser.parse_args()
    server = OpenAIUpstream(api_key=args.api_key, port=args.port).start()
    print(server.url, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
