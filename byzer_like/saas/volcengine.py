"""``saas/volcengine``: Volcengine (ByteDance) text to speech over its HTTP API (``POST /api/v1/tts``).

The request is one JSON object with ``app`` (appid, cluster), ``user``, ``audio`` (voice, encoding, speed) and
``request`` (reqid, text, ``operation: query``) sections; the key goes in ``Authorization: Bearer;<token>``. The
answer carries the audio base64-encoded in ``data``; ``code`` 3000 means success, other codes are mapped to our
errors by number (3003 concurrency quota -> 429, 3001/3010/3011/3050 -> 400, ...).

Example (the seed's line):
    byzer-like deploy --pretrained_model_type saas/volcengine --cpus_per_worker 0.001 --gpus_per_worker 0 \\
        --num_workers 1 --infer_params saas.api_key=${MODEL_VOLCANO_TTS_TOKEN} saas.app_id=6503259792 \\
        saas.model=volcano_tts --model volcano_tts
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, ClassVar

import httpx
from pydantic import Field, field_validator

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import UnsupportedError
from byzer_like.protocol import SpeechRequest, SpeechResponse
from byzer_like.saas.base import SaasOptions
from byzer_like.saas.tts_http import TTSBackend, TTSStatusError, content_type_of

DEFAULT_BASE = "https://openspeech.bytedance.com"
TTS_PATH = "/api/v1/tts"
ENCODINGS = {"mp3": "mp3", "wav": "wav", "pcm": "pcm", "opus": "ogg_opus"}
SUCCESS = 3000
# Volcengine's documented error codes -> the HTTP status whose error class fits.
CODE_STATUS = {3001: 400, 3003: 429, 3005: 503, 3006: 499, 3010: 400, 3011: 400, 3030: 408, 3031: 500, 3032: 408,
               3040: 502, 3050: 400}


class VolcengineOptions(SaasOptions):
    """Options of ``saas/volcengine``."""

    model: str = Field(default="volcano_tts", description="The TTS cluster (byzerllm's saas.model=volcano_tts).")
    app_id: str = Field(min_length=1, description="The Volcengine application id (saas.app_id).")
    voice: str = Field(default="BV001_streaming", description="Default voice_type when a request names none.")
    uid: str = Field(default="byzer_like", description="The user id sent in the request's user section.")

    @field_validator("app_id", mode="before")
    @classmethod
    def _app_id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # --infer_params types 6503259792 as an int


class VolcengineBackend(TTSBackend):
    """A proxy to Volcengine text to speech.

    Example:
        >>> BackendSpec(model_type="saas/volcengine", engine_kwargs={"app_id": "650", "api_key": "..."})
    """

    options_model: ClassVar[type[EngineOptions]] = VolcengineOptions
    provider = "volcengine"
    options: VolcengineOptions

    def base_url(self) -> str:
        """``saas.base_url`` or Volcengine's speech host."""
        return self.options.base_url or DEFAULT_BASE

    def body(self, req: SpeechRequest) -> dict[str, Any]:
        """The JSON request of one synthesis."""
        encoding = ENCODINGS.get(req.response_format)
        if encoding is None:
            raise UnsupportedError(f"response_format '{req.response_format}' is not supported by saas/volcengine "
                                   f"(supported: {', '.join(ENCODINGS)})", param="response_format")
        audio: dict[str, Any] = {"voice_type": req.voice or self.options.voice, "encoding": encoding}
        if req.speed is not None:
            audio["speed_ratio"] = req.speed
        # NOTE: app.token is documented as a fixed placeholder; the key travels only in the Authorization header.
        return {"app": {"appid": self.options.app_id, "token": "access_token", "cluster": self.options.model},
                "user": {"uid": self.options.uid}, "audio": audio,
                "request": {"reqid": uuid.uuid4().hex, "text": req.input, "text_type": "plain",
                            "operation": "query"}}

    async def speech_once(self, req: SpeechRequest) -> SpeechResponse:
        """One synthesis call; the audio comes back base64-encoded in ``data``."""
        headers = {"Authorization": f"Bearer;{self.secrets.get('api_key') or ''}"}
        resp = await self.client.post(TTS_PATH, json=self.body(req), headers=headers)
        data = _answer(resp)
        return SpeechResponse(audio=base64.b64decode(data["data"]), content_type=content_type_of(req.response_format))


def _answer(resp: httpx.Response) -> dict[str, Any]:
    """The success JSON, or a ``TTSStatusError`` from the HTTP status or Volcengine's ``code``."""
    try:
        data = resp.json()
    except ValueError:
        data = {"message": resp.text[:200] or resp.reason_phrase}
    code = data.get("code")
    if resp.status_code < 400 and code == SUCCESS and data.get("data"):
        return data
    status = resp.status_code if resp.status_code >= 400 else CODE_STATUS.get(code, 502)
    message = str(data.get("message") or "no audio in the answer")
    raise TTSStatusError(status, f"{message} (code {code})" if code is not None else message, resp.headers,
                         code=str(code) if code is not None else None)
