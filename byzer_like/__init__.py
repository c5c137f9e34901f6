"""byzer_like: deploy models under an alias on Ray and talk to them from the shell, Python and HTTP.

Example:
    >>> from byzer_like import Client
    >>> Client("smol_chat").chat("What is the capital of France?").text  # doctest: +SKIP
"""

from byzer_like.errors import (
    AliasExistsError,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    ByzerLikeError,
    ClusterError,
    InvalidRequestError,
    InvalidSpecError,
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    UnsupportedError,
    UpstreamError,
)
from byzer_like.spec import BackendSpec, DeploySpec, QueueSpec, ResourceSpec

__version__ = "0.1.0"

__all__ = [
    "AliasExistsError", "AsyncClient", "AuthenticationError", "BackendError", "BackendSpec", "BackendUnavailableError",
    "ByzerLikeError", "Client", "ClusterError", "DeploySpec", "InvalidRequestError", "InvalidSpecError",
    "ModelLoadError", "ModelNotFoundError", "OverloadedError", "PermissionDeniedError", "QueueSpec", "RateLimitError",
    "RequestTimeoutError", "ResourceSpec", "UnsupportedError", "UpstreamError", "DeployHandle", "deploy",
    "list_deployments", "scale", "status", "undeploy",
]


def __getattr__(name: str):  # noqa: ANN202 - lazy: keep `import byzer_like` free of ray start-up cost
    if name in ("Client", "AsyncClient"):
        from byzer_like import client

        return getattr(client, name)
    if name in ("deploy", "undeploy", "list_deployments", "scale", "status", "DeployHandle"):
        from byzer_like import pool

        return getattr(pool, name)
    raise AttributeError(name)
