"""The gateway served by uvicorn inside a plain Ray actor, one per node (``serve``'s default server).

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
BIND_WAIT_S = 10.0


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
            return self.address()
        import uvicorn

        from byzer_like.gateway.app import build_app

        app = build_app(self.settings, keys=self.keys)
        deadline = asyncio.get_running_loop().time() + BIND_WAIT_S
        while True:  # NOTE: a gateway just stopped on this port may take a moment to let it go
            config = uvicorn.Config(app, host=self.settings.host, port=self.settings.port, log_level="error",
                                    access_log=False, lifespan="on")
            self.server = uvicorn.Server(config)
            self.task = asyncio.ensure_future(self.server.serve())
            while not self.server.started and not self.task.done():
                await asyncio.sleep(0.05)
            if self.server.started:
                return self.address()
            if asyncio.get_running_loop().time() > deadline:  # NOTE: uvicorn exits instead of raising
                raise ClusterError(f"the gateway could not listen on {self.address()} (is the port in use? pick "
                                   "another with --port)")
            await asyncio.sleep(0.25)

    def address(self) -> str:
        """``host:port`` this server listens on."""
        return f"{self.settings.host}:{self.settings.port}"

    async def stop(self) -> None:
        """Stop accepting and finish the requests in flight."""
        if self.server is not None:
            self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait([self.task], timeout=10)


def start_actors(settings: GatewaySettings, keys: KeyTable | None = None) -> tuple[list[str], str | None]:
    """Start (or replace) one gateway server actor on every alive node.

    Returns:
        The ``host:port`` of each, and the address the gateway moved from (None when it did not move).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    before = running_address()
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
        addresses = ray.get([h.start.remote() for h in handles], timeout=START_TIMEOUT_S)
    except Exception as exc:
        for handle in handles:
            ray.kill(handle, no_restart=True)
        from byzer_like._ray import translate

        raise translate(exc) from None
    here = f"{settings.host}:{settings.port}"
    return addresses, before if before not in (None, here) else None


def running_address() -> str | None:
    """``host:port`` of the running gateway server actors, or None."""
    for name in running_actors():
        try:
            return ray.get(ray.get_actor(name, namespace=NAMESPACE).address.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - gone or dying: try the next
            continue
    return None


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
