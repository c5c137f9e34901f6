"""One pure-ASGI middleware: request id, per-route metrics, and the catch-all 500 (no traceback to the caller).

Pure ASGI rather than ``BaseHTTPMiddleware``: it adds no task or queue per request, and streams pass through.
"""

from __future__ import annotations

import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from byzer_like.gateway.errors import error_response
from byzer_like.metrics import GatewayRayMetrics


class GatewayMetrics:
    """Request counters and latency per route template and status, in the app's own registry."""

    def __init__(self) -> None:
        self.cluster = GatewayRayMetrics()  # every replica's counts, summed where Ray's metrics are scraped
        self.registry = CollectorRegistry()
        self.requests = Counter("byzer_like_gateway_requests", "HTTP requests handled.", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("byzer_like_gateway_request_seconds", "Time to the response head.", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one response under its route template."""
        route = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.requests.labels(name, str(status)).inc()
        self.latency.labels(name).observe(seconds)
        self.cluster.observe(name, status, seconds)


class GatewayMiddleware:
    """Give each request an id, count it, and turn an unhandled exception into a 500 JSON error."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start, status = time.perf_counter(), [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self.metrics.observe(scope, status[0], time.perf_counter() - start)
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - the one place unknown errors become a 500
            if status[0]:
                raise  # the head went out already; nothing sane can be sent
            await error_response(exc, request_id)(scope, receive, send_wrapper)


