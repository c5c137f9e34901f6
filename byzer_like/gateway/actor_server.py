"""The gateway served by uvicorn inside a plain Ray actor, one per node (``serve --server uvicorn``).

The same FastAPI app as the Ray Serve gateway, without Serve's HTTP proxy and replica hop in front of it: a request
goes socket → uvicorn → app → router → worker. What Serve gives and this does not: replicas you can scale
(``--replicas``), autoscaling of the gateway itself, and Serve's health-checked proxies; here each node runs one
server process (a detached actor; if it dies, run `serve` again), listening on ``--host``/``--port`` of each node.
``docs/benchmarks.md`` has both measured side by side.

Example:
    >>> start_actors(GatewaySettings(port=8000))  # doctest: +SKIP
    >>> stop_actors()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from byzer_like.errors import ClusterError
from byzer_like.gateway.auth import KeyTable
from byzer_like.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)
NAMESPACE = "byzer_like_gateway"  # NOTE: not the aliases' namespace, where every named actor is a router or worker
ACTOR_PREFIX = "http/"
START_TIMEOUT_S = 60.0


class GatewayServer:
    """uvicorn serving the gateway app on this actor's event loop.

    Args:
        settings: Process settings (host, port, timeouts).
        keys: Accepted API key hashes.
    """

    def __init__(self, settings: GatewaySettings, keys: KeyTable) -> None:
        self.settings, self.keys = settings, keys
        self.server: Any = None
        self.task: asyncio.Task | None = None

    async def start(self) -> str:
        """Listen; returns ``host:port`` once uvicorn accepts connections (or raises why it could not)."""
        if self.server is not None and self.server.started:
            return f"{self.settings.host}:{self.settings.port}"
        import uvicorn

        from byzer_like.gateway.app import build_app

        config = uvicorn.Config(build_app(self.settings, keys=self.keys), host=self.settings.host,
                                port=self.settings.port, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():  # NOTE: uvicorn logs why (port taken) and exits instead of raising
                raise ClusterError(f"the gateway could not listen on {self.settings.host}:{self.settings.port} "
                                   "(is the port in use? pick another with --port)")
            await asyncio.sleep(0.05)
        return f"{self.settings.host}:{self.settings.port}"

    async def stop(self) -> None:
        """Stop accepting and finish the requests in flight."""
        if self.server is not None:
            self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait([self.task], timeout=10)


def start_actors(settings: GatewaySettings, keys: KeyTable | None = None) -> list[str]:
    """Start (or replace) one gateway server actor on every alive node; returns the ``host:port`` of each."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    stop_actors()
    actor = ray.remote(GatewayServer)
    handles = []
    for node in (n for n in ray.nodes() if n.get("Alive")):
        handles.append(actor.options(
            name=ACTOR_PREFIX + node["NodeID"], namespace=NAMESPACE, lifetime="detached", num_cpus=0,
            max_concurrency=10_000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(settings, keys or KeyTable()))
    try:
        return ray.get([h.start.remote() for h in handles], timeout=START_TIMEOUT_S)
    except Exception as exc:
        for handle in handles:
            ray.kill(handle, no_restart=True)
        from byzer_like._ray import translate

        raise translate(exc) from None


def url_of(settings: GatewaySettings) -> str:
    """The URL a local caller reaches the gateway at."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def running_actors() -> list[str]:
    """Names of the gateway server actors alive now."""
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith(ACTOR_PREFIX)]


def stop_actors() -> bool:
    """Stop every gateway server actor; False when none ran."""
    names = running_actors()
    for name in names:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
            try:
                ray.get(handle.stop.remote(), timeout=15)
            except Exception:  # noqa: BLE001 - killed below either way
                pass
            ray.kill(handle, no_restart=True)
        except ValueError:  # NOTE: gone meanwhile
            continue
    return bool(names)
