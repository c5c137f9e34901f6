"""Fake text-to-speech providers on 127.0.0.1: Volcengine's ``/api/v1/tts`` and Azure's ``/cognitiveservices/v1``.

Each "synthesises" a deterministic byte string naming the format and the text, so tests can check what arrived.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from aiohttp import web

from tests.upstreams.server import UpstreamServer

_AZURE_TYPES = {"mp3": "audio/mpeg", "riff": "audio/x-wav", "raw": "audio/pcm", "ogg": "audio/ogg"}


class VolcengineUpstream(UpstreamServer):
    """Volcengine TTS: ``Authorization: Bearer;<token>``; JSON answers with ``code`` (3000 = success)."""

    def routes(self) -> list[tuple[str, str, Any]]:
        """The one synthesis route."""
        return [("POST", "/api/v1/tts", self.tts)]

    def authorized(self, request: web.Request) -> bool:
        """Volcengine's ``Bearer;`` header (a semicolon, not a space)."""
        return request.headers.get("Authorization") == f"Bearer;{self.api_key}"

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """Volcengine's error shape: ``{"reqid", "code", "message"}``."""
        code = {401: 3001, 429: 3003, 503: 3005}.get(status, 3031)
        if status == 401:
            message = "authenticate request: load grant: requested grant not found"
        return web.json_response(body or {"reqid": "r1", "code": code, "message": message}, status=status,
                                 headers=headers)

    async def tts(self, request: web.Request) -> web.StreamResponse:
        """Answers ``VOLC:<encoding>:<voice>:<text>`` base64-encoded in ``data``."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        audio = body["audio"]
        data = f"VOLC:{audio['encoding']}:{audio['voice_type']}:{body['request']['text']}".encode()
        return web.json_response({"reqid": body["request"]["reqid"], "code": 3000, "operation": "query",
                                  "message": "Success", "sequence": -1, "data": base64.b64encode(data).decode(),
                                  "addition": {"duration": "1000"}})


class AzureTTSUpstream(UpstreamServer):
    """Azure TTS: ``Ocp-Apim-Subscription-Key``; SSML in, raw audio out; errors are bare statuses."""

    def routes(self) -> list[tuple[str, str, Any]]:
        """The one synthesis route."""
        return [("POST", "/cognitiveservices/v1", self.tts)]

    def authorized(self, request: web.Request) -> bool:
        """Azure's subscription key header."""
        return request.headers.get("Ocp-Apim-Subscription-Key") == self.api_key

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """Azure answers errors with a status and a short text (often none)."""
        text = "Access denied due to invalid subscription key." if status == 401 else message
        return web.Response(status=status, text=text, headers=headers)

    async def tts(self, request: web.Request) -> web.StreamResponse:
        """Answers ``AZ:<output format>:<voice>:<spoken text>`` with the format's content type."""
        early, _, body = await self.admit(request)
        if early is not None:
            return early
        ssml = body.decode()
        if request.headers.get("Content-Type") != "application/ssml+xml" or "<speak" not in ssml:
            return web.Response(status=400, text="Bad SSML")
        voice = re.search(r"<voice name=[\"']([^\"']*)", ssml).group(1)  # type: ignore[union-attr]
        spoken = re.sub(r"<[^>]+>", "", ssml)
        fmt = request.headers.get("X-Microsoft-OutputFormat", "")
        content_type = _AZURE_TYPES.get(fmt.split("-")[0] if not fmt.endswith("mp3") else "mp3", "audio/wav")
        return web.Response(body=f"AZ:{fmt}:{voice}:{spoken}".encode(), content_type=content_type)
