"""Small helpers around Ray: the namespace, finding actors by name, and turning Ray's errors into ours."""

from __future__ import annotations

from typing import Any

import ray
from ray import exceptions as rex

from byzer_like.errors import (
    BackendError,
    BackendUnavailableError,
    ByzerLikeError,
    ModelNotFoundError,
    RequestTimeoutError,
)

NAMESPACE = "byzer_like"


def get_actor(name: str) -> Any:
    """The named actor in our namespace.

    Raises:
        ModelNotFoundError: when no such actor exists.
    """
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ModelNotFoundError(f"no deployment named '{name}'; `byzer-like list` shows what is deployed",
                                 param="model") from None


def named_actors() -> list[str]:
    """Names of every live named actor in our namespace."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE)


def translate(exc: BaseException) -> ByzerLikeError:
    """Our own error for anything a Ray call raised (the original for our types, unwrapped from RayTaskError)."""
    if isinstance(exc, ByzerLikeError) and not isinstance(exc, rex.RayTaskError):
        return exc
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        if isinstance(cause, (rex.RayTaskError, rex.RayActorError)):
            return translate(cause)
        return cause if isinstance(cause, ByzerLikeError) else BackendError(f"{type(cause).__name__}: {cause}")
    if isinstance(exc, rex.GetTimeoutError):
        return RequestTimeoutError("the request did not finish in time; raise --timeout or try again")
    if isinstance(exc, (rex.RayActorError, rex.ActorUnavailableError)):
        return BackendUnavailableError(f"a worker of this deployment is not available: {_first_line(exc)}")
    if isinstance(exc, rex.TaskCancelledError):
        return BackendError("the request was cancelled")
    return BackendError(f"{type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
