"""The gateway as a Ray Serve application: a FastAPI ingress deployment built on each replica.

The ingress class receives only the settings and the key *hashes*; the FastAPI app is built on the replica
(``__serve_build_asgi_app__``), so nothing unpicklable or secret travels through Serve's controller.

Example:
    >>> start(GatewaySettings(port=8000, replicas=2))  # doctest: +SKIP
    >>> stop()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from byzer_like.errors import InvalidRequestError
from byzer_like.gateway.app import build_app
from byzer_like.gateway.auth import KeyTable
from byzer_like.gateway.settings import APP_NAME, GatewaySettings

logger = logging.getLogger(__name__)


@serve.ingress()
class GatewayIngress:
    """One gateway replica.

    Args:
        settings: Process settings.
        keys: Accepted API key hashes.
    """

    def __init__(self, settings: GatewaySettings, keys: KeyTable) -> None:
        self.settings = settings
        self.keys = keys

    def __serve_build_asgi_app__(self) -> Any:
        """Build the FastAPI app on the replica."""
        return build_app(self.settings, keys=self.keys)


def build_serve_app(settings: GatewaySettings, keys: KeyTable | None = None,
                    runtime_env: dict[str, Any] | None = None) -> Any:
    """The bound Serve application (``serve.run`` it).

    Args:
        settings: Process settings.
        keys: Accepted API key hashes.
        runtime_env: Ray runtime env of the replicas (e.g. Serve feature flags in ``env_vars``).
    """
    actor_options: dict[str, Any] = {"num_cpus": 0, **({"runtime_env": runtime_env} if runtime_env else {})}
    deployment = serve.deployment(GatewayIngress, name="gateway", num_replicas=settings.replicas,
                                  max_ongoing_requests=settings.max_ongoing_requests,
                                  ray_actor_options=actor_options)
    return deployment.bind(settings, keys or KeyTable())


def start(settings: GatewaySettings, keys: KeyTable | None = None) -> tuple[str, str | None]:
    """Start (or update) the gateway on the connected cluster; return its URL and, if it moved, its old address.

    Ray Serve keeps the HTTP host/port it was first started with and ignores new ones (only logging a warning), so
    a gateway asked for another address is moved: Serve is restarted on the new one when the gateway is all it
    runs; when other Serve applications share it, the request is refused with the command that fixes it.

    Raises:
        InvalidRequestError: Serve already listens elsewhere with applications that are not ours.
    """
    moved_from = None
    running = running_http_address()
    if running is not None and running != (settings.host, settings.port):
        others = sorted(set(_applications()) - {APP_NAME})
        old = f"{running[0]}:{running[1]}"
        if others:
            raise InvalidRequestError(
                f"Ray Serve on this cluster already listens on {old} and also runs {', '.join(others)}; serve the "
                f"gateway there (`byzer-like serve --host {running[0]} --port {running[1]}`) or stop those "
                "applications first (`serve shutdown`)", param="port")
        serve.shutdown()
        moved_from = old
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_serve_app(settings, keys), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}", moved_from


def running_http_address() -> tuple[str, int] | None:
    """The (host, port) Ray Serve's proxies listen on, or None when Serve is not running."""
    from ray.serve.context import _get_global_client  # noqa: PLC0415 - Serve's only accessor for its HTTP config

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    config = client.http_config
    return config.host, config.port


def _applications() -> list[str]:
    try:
        return list(serve.status().applications)
    except Exception:  # noqa: BLE001 - Serve not running
        return []


def stop() -> bool:
    """Remove the gateway application; shut Serve down when nothing else runs on it.

    Returns:
        False when no gateway was running.
    """
    try:
        apps = serve.status().applications
    except Exception:  # noqa: BLE001 - Serve not running at all
        return False
    if APP_NAME not in apps:
        return False
    if set(apps) == {APP_NAME}:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)
    return True
