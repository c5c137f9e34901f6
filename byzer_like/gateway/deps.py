"""FastAPI dependencies: the caller's grant (from its API key) and the alias access object on ``app.state``."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from byzer_like.gateway.aliases import Aliases
from byzer_like.gateway.auth import Grant, KeyTable

# Only documents the Bearer scheme in the OpenAPI schema; the check is ours (so the 401 has OpenAI's shape).
bearer_scheme = HTTPBearer(auto_error=False)


def grant_of(request: Request) -> Grant:
    """The grant of this request's API key.

    Raises:
        AuthenticationError: 401 when keys are configured and the request has no valid one.
    """
    keys: KeyTable = request.app.state.keys
    return keys.check(request.headers.get("authorization"))


def aliases_of(request: Request) -> Aliases:
    """The app's alias access object."""
    return request.app.state.aliases
