"""One exception hierarchy for byzer_like.

Every error carries its HTTP status, its OpenAI error ``type`` and the CLI exit code as class attributes, so the
CLI and the gateway map an exception once, by type. All errors pickle cleanly, so they cross Ray actor boundaries
intact (byzerllm's SaaS errors did not; see ``reference/byzerllm-compat.md``).

Example:
    >>> raise InvalidRequestError("temperature must be >= 0", param="temperature")
"""

from __future__ import annotations

from typing import Any


class ByzerLikeError(Exception):
    """Root of every error byzer_like raises on purpose.

    Args:
        message: One line that says what went wrong and what to do.
        param: The request or spec field at fault, if any.
        code: A short machine-readable code (OpenAI's ``error.code``).
        upstream_status: The HTTP status an upstream provider returned, if any.
    """

    status_code: int = 500
    error_type: str = "internal_error"
    exit_code: int = 1

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, upstream_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.upstream_status = upstream_status

    def __reduce__(self) -> tuple[Any, ...]:
        # NOTE: keyword-only arguments do not survive the default exception pickling; rebuild explicitly.
        return (_rebuild, (type(self), self.message, self._kwargs()))

    def _kwargs(self) -> dict[str, Any]:
        return {"param": self.param, "code": self.code, "upstream_status": self.upstream_status}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style error body: ``{"error": {message, type, param, code}}``."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


def _rebuild(cls: type[ByzerLikeError], message: str, kwargs: dict[str, Any]) -> ByzerLikeError:
    return cls(message, **kwargs)


class InvalidRequestError(ByzerLikeError):
    """The request or parameters are invalid (HTTP 400, CLI exit 2)."""

    status_code = 400
    error_type = "invalid_request_error"
    exit_code = 2


class InvalidSpecError(InvalidRequestError):
    """A deployment spec is invalid; raised before any actor starts (CLI exit 2)."""

    error_type = "invalid_spec"


class UnsupportedError(InvalidRequestError):
    """The backend cannot do what was asked (a capability or a sampling parameter it cannot honour)."""

    error_type = "unsupported"


class AuthenticationError(ByzerLikeError):
    """Missing or invalid credentials (HTTP 401)."""

    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(ByzerLikeError):
    """Valid credentials that may not use this resource (HTTP 403)."""

    status_code = 403
    error_type = "permission_error"


class ModelNotFoundError(ByzerLikeError):
    """No deployment has this alias (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"


class AliasExistsError(ByzerLikeError):
    """The alias is already deployed and replacing it was not asked for (HTTP 409, CLI exit 2)."""

    status_code = 409
    error_type = "conflict_error"
    exit_code = 2


class RateLimitError(ByzerLikeError):
    """Too many requests (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "retry_after": self.retry_after}


class OverloadedError(RateLimitError):
    """Every worker slot is taken and the queue is full, or the queue wait passed the request timeout (429)."""

    error_type = "overloaded_error"


class RequestTimeoutError(ByzerLikeError):
    """The request did not finish within its timeout (HTTP 504)."""

    status_code = 504
    error_type = "timeout_error"


class UpstreamError(ByzerLikeError):
    """An upstream provider failed; carries its status and message (HTTP 502)."""

    status_code = 502
    error_type = "upstream_error"


class BackendUnavailableError(ByzerLikeError):
    """The worker or engine is not available right now (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable"


class ModelLoadError(ByzerLikeError):
    """A model failed to load during deploy; the message carries the engine's own error."""

    status_code = 500
    error_type = "model_load_error"


class ClusterError(ByzerLikeError):
    """Ray cluster could not be reached or started."""

    status_code = 503
    error_type = "cluster_error"


class BackendError(ByzerLikeError):
    """The engine failed while serving a request (HTTP 500)."""

    status_code = 500
    error_type = "backend_error"


ALL_ERRORS: tuple[type[ByzerLikeError], ...] = (
    ByzerLikeError, InvalidRequestError, InvalidSpecError, UnsupportedError, AuthenticationError,
    PermissionDeniedError, ModelNotFoundError, AliasExistsError, RateLimitError, OverloadedError,
    RequestTimeoutError, UpstreamError, BackendUnavailableError, ModelLoadError, ClusterError, BackendError,
)
