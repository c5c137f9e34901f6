"""What the HTTP text-to-speech proxies (``saas/volcengine``, ``saas/azure``) share.

An async ``httpx`` client, a provider failure carrying its HTTP status, and "this alias only speaks" for chat.

Example:
    >>> class Beep(TTSBackend):  # doctest: +SKIP
    ...     provider = "beep"
    ...     def base_url(self): return "https://beep.example"
    ...     async def speech_once(self, req): return SpeechResponse(audio=b"beep")
"""

from __future__ import annotations

import abc
from typing import Any, AsyncIterator, Mapping

import httpx

from byzer_like.errors import ByzerLikeError
from byzer_like.protocol import AUDIO_CONTENT_TYPES, ChatRequest, Chunk
from byzer_like.saas.base import SaasBackend
from byzer_like.saas.errors import ErrorMap, error_for_status, retry_after_seconds, transport_mappers


class TTSStatusError(Exception):
    """A TTS provider's failure answer, raised inside the proxy only (mapped by :func:`tts_error_map`).

    Args:
        status: The HTTP status our error class follows (the provider's code already translated to one).
        message: The provider's own message.
        headers: Response headers (for ``Retry-After``).
        code: The provider's error code, if any.
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None,
                 code: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.text, self.headers, self.code = status, message, headers, code


def _status_error(provider: str, exc: BaseException) -> ByzerLikeError:
    assert isinstance(exc, TTSStatusError)
    return error_for_status(provider, exc.status, exc.text, code=exc.code,
                            retry_after=retry_after_seconds(exc.headers))


class TTSBackend(SaasBackend):
    """Base of the text-to-speech-only proxies: chat and the other capabilities answer a 400 naming them."""

    @classmethod
    def error_map(cls) -> ErrorMap:
        """Provider failures and httpx's transport errors."""
        return ErrorMap(cls.provider, {TTSStatusError: _status_error, **transport_mappers()})

    @abc.abstractmethod
    def base_url(self) -> str:
        """The API root requests go to (``saas.base_url`` overrides the provider's)."""

    def make_client(self) -> Any:
        """An async ``httpx`` client on the provider's root, with our timeout."""
        return httpx.AsyncClient(base_url=self.base_url().rstrip("/"), timeout=self.options.timeout)

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Text-to-speech aliases do not chat."""
        raise self.unsupported("chat (it is a text-to-speech model)", "messages")
        yield  # pragma: no cover - makes this an async generator

    def describe(self) -> dict[str, Any]:
        """Adds the effective API root."""
        return {**super().describe(), "base_url": self.base_url()}


def content_type_of(fmt: str) -> str:
    """The MIME type of one of our audio format names."""
    return AUDIO_CONTENT_TYPES.get(fmt, "application/octet-stream")
