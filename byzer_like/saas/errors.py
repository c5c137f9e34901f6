"""Provider exceptions -> our typed errors, looked up by exception type (never by message text).

Each provider module registers an :class:`ErrorMap` from its SDK's exception classes to small functions; the
lookup walks the raised exception's MRO, so the most specific registered class wins. The status-to-class table is
shared, so a 401 is an ``AuthenticationError`` whichever SDK raised it, carrying the upstream status and message.

Example:
    >>> err = error_for_status("openai", 401, "Incorrect API key provided")
    >>> type(err).__name__, err.upstream_status
    ('AuthenticationError', 401)
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from byzer_like.errors import AuthenticationError, BackendError, ByzerLikeError, InvalidRequestError, \
    PermissionDeniedError, RateLimitError, RequestTimeoutError, UpstreamError
from byzer_like.saas.secrets import redact

Mapper = Callable[[str, BaseException], ByzerLikeError]

_STATUS_CLASSES: dict[int, type[ByzerLikeError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 408: RequestTimeoutError,
    413: InvalidRequestError, 422: InvalidRequestError, 429: RateLimitError,
}


def error_for_status(provider: str, status: int | None, message: str, *, retry_after: float | None = None,
                     param: str | None = None, code: str | None = None) -> ByzerLikeError:
    """Our error for an upstream HTTP status, carrying the status and the upstream's own message."""
    cls = _STATUS_CLASSES.get(status or 0, UpstreamError)
    text = f"{provider} upstream returned {status}: {message}" if status else f"{provider} upstream failed: {message}"
    if cls is AuthenticationError:
        text += " (check saas.api_key / --token-env / --token-file)"
    kwargs: dict[str, Any] = {"param": param, "code": code, "upstream_status": status}
    if cls is RateLimitError:
        kwargs["retry_after"] = retry_after
    return cls(text, **kwargs)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta seconds), if present and sane."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if 0 <= seconds <= 600:
            return seconds
    return None


def timeout_error(provider: str, exc: BaseException) -> ByzerLikeError:
    """A read/connect timeout of the upstream."""
    return RequestTimeoutError(f"{provider} upstream did not answer in time ({type(exc).__name__}); "
                               "raise saas.timeout or try again")


def connection_error(provider: str, exc: BaseException) -> ByzerLikeError:
    """The upstream could not be reached or dropped the connection."""
    return UpstreamError(f"{provider} upstream connection failed: {type(exc).__name__}: {exc}")


@dataclass
class ErrorMap:
    """Exception class -> mapper, for one provider.

    Args:
        provider: The provider's name, used in messages.
        mappers: Exception class -> ``mapper(provider, exc)``.
        secrets: Plain secrets to scrub from every message (set by the backend once its keys are resolved).
    """

    provider: str
    mappers: dict[type[BaseException], Mapper] = field(default_factory=dict)
    secrets: Iterable[str | None] = ()

    def __call__(self, exc: BaseException) -> ByzerLikeError:
        """Translate ``exc``; our own errors pass through, unknown ones become ``BackendError``."""
        err = self._map(exc)
        err.message = redact(err.message, self.secrets)
        err.args = (err.message,)
        return err

    def _map(self, exc: BaseException) -> ByzerLikeError:
        if isinstance(exc, ByzerLikeError):
            return exc
        for cls in type(exc).__mro__:
            mapper = self.mappers.get(cls)
            if mapper is not None:
                return mapper(self.provider, exc)
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return timeout_error(self.provider, exc)
        return BackendError(f"{self.provider} proxy failed: {type(exc).__name__}: {exc}")


def transport_mappers() -> dict[type[BaseException], Mapper]:
    """Timeouts and broken connections of the HTTP stacks in use (``httpx``; newer SDKs ``httpx2``; ``aiohttp``).

    A connection cut while an SDK iterates a streamed body can surface unwrapped from these.
    """
    out: dict[type[BaseException], Mapper] = {}
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        out[module.TimeoutException] = timeout_error
        out[module.TransportError] = connection_error
    try:  # NOTE: the plain aiohttp session of unary OpenAI-compatible chats
        import aiohttp
    except ImportError:
        return out
    out[aiohttp.ClientError] = connection_error
    out[aiohttp.ServerTimeoutError] = timeout_error
    return out


def body_message(body: Any, fallback: str) -> str:
    """The human message inside an error body (OpenAI/Anthropic ``{"error": {"message"}}``, AWS ``{"message"}``)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("message"), str):
            return body["message"]
    return fallback
