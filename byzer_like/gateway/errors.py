"""One mapping from any exception to an HTTP status and OpenAI error JSON, used by every route and stream.

Our own errors carry their status; FastAPI validation errors become 400 naming the field; Starlette's routing
errors keep their status; anything else is a 500 with the request id and no traceback (logged here instead).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import exceptions as rex
from starlette.exceptions import HTTPException

from byzer_like._ray import translate
from byzer_like.errors import ByzerLikeError, InvalidRequestError, RateLimitError, RequestTimeoutError

logger = logging.getLogger(__name__)
_HTTP_TYPES = {404: "not_found_error", 405: "method_not_allowed", 413: "request_too_large"}


class HTTPStatusError(ByzerLikeError):
    """A routing-level HTTP error (unknown path, wrong method) with its own status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status_code = status
        self.error_type = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error")


def to_error(exc: BaseException) -> ByzerLikeError:
    """Our error for any exception (unknown ones become a generic 500)."""
    if isinstance(exc, ByzerLikeError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors())
    if isinstance(exc, HTTPException):
        return HTTPStatusError(str(exc.detail), exc.status_code)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RequestTimeoutError("the request did not finish in time")
    if isinstance(exc, rex.RayError):
        return translate(exc)
    return ByzerLikeError("internal error; the server log has the details under this request id",
                          code="internal_error")


def validation_error(errors: Any) -> InvalidRequestError:
    """A 400 naming the first invalid field of a pydantic/FastAPI error list."""
    err = list(errors)[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    name = ".".join(loc) or None
    if err.get("type") == "extra_forbidden":
        return InvalidRequestError(f"unknown field '{name}'; remove it from the request", param=name)
    return InvalidRequestError(f"invalid '{name or 'body'}': {err.get('msg', 'invalid value')}", param=name)


def error_payload(err: ByzerLikeError, request_id: str | None) -> dict[str, Any]:
    """The OpenAI error body; 5xx bodies also carry the request id."""
    body = err.to_dict()
    if err.status_code >= 500 and request_id:
        body["error"]["request_id"] = request_id
    return body


def log_error(err: ByzerLikeError, exc: BaseException, request_id: str | None) -> None:
    """5xx as errors (with the traceback for unknown exceptions), 4xx as warnings."""
    if err.status_code >= 500:
        logger.error("request %s failed: %s", request_id, err.message, exc_info=exc if err is not exc else None)
    else:
        logger.warning("request %s: %s %s", request_id, err.status_code, err.message)


def error_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    """The JSON response for ``exc`` (``Retry-After`` on 429s)."""
    err = to_error(exc)
    log_error(err, exc, request_id)
    headers = {"x-request-id": request_id} if request_id else {}
    if isinstance(err, RateLimitError):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after or 1)))
    return JSONResponse(error_payload(err, request_id), status_code=err.status_code, headers=headers)


def request_id_of(request: Request) -> str | None:
    """The id the middleware gave this request."""
    return getattr(request.state, "request_id", None)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc, request_id_of(request))


def register(app: FastAPI) -> None:
    """Install the handlers once; unknown exceptions are caught by the middleware (see ``app.py``)."""
    for exc_type in (ByzerLikeError, RequestValidationError, HTTPException):
        app.add_exception_handler(exc_type, _handle)  # type: ignore[arg-type]
