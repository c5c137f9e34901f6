"""The app factory: one FastAPI app with the OpenAI, TGI and simple routes, auth, error mapping and metrics.

Example:
    >>> app = build_app(GatewaySettings(), keys=KeyTable.from_text("s3cret"))  # doctest: +SKIP
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from byzer_like.gateway import errors, media_routes, openai_routes, simple_routes, tgi_routes
from byzer_like.gateway.aliases import Aliases
from byzer_like.gateway.auth import KeyTable
from byzer_like.gateway.deps import bearer_scheme, grant_of
from byzer_like.gateway.middleware import GatewayMetrics, GatewayMiddleware
from byzer_like.gateway.settings import GatewaySettings


def build_app(settings: GatewaySettings, keys: KeyTable | None = None, aliases: Aliases | None = None) -> FastAPI:
    """Build the gateway's ASGI app.

    Args:
        settings: Process settings (timeouts).
        keys: Accepted API keys (hashes); empty or None = no auth.
        aliases: Alias access (default: cached ``AsyncClient`` per alias).

    Returns:
        The FastAPI app.
    """
    app = FastAPI(title="byzer_like gateway", version="0.1.0",
                  description="OpenAI, TGI and simple chat APIs for every alias deployed with byzer-like.")
    app.state.keys = keys or KeyTable()
    app.state.aliases = aliases or Aliases(timeout=settings.request_timeout_s)
    metrics = GatewayMetrics()
    errors.register(app)
    # NOTE: order matters: /v1/* and the fixed paths before the /{alias}/* patterns.
    secured = [Depends(bearer_scheme)] if app.state.keys.enabled else []
    app.include_router(openai_routes.router, dependencies=secured)
    app.include_router(media_routes.router, dependencies=secured)
    _add_ops_routes(app, metrics)
    app.include_router(tgi_routes.router, dependencies=secured)
    app.include_router(simple_routes.router, dependencies=secured)
    app.add_middleware(GatewayMiddleware, metrics=metrics)
    return app


def _add_ops_routes(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        """The gateway itself is up (open without a key)."""
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["ops"], dependencies=[Depends(grant_of)])
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics of this gateway replica."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
