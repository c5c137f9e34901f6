"""Process settings of the gateway (``BYZER_LIKE_`` environment prefix); specs never read the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_NAME = "byzer_like_gateway"


class GatewaySettings(BaseSettings):
    """Where and how the gateway serves.

    Example:
        >>> GatewaySettings(port=8000, replicas=2).port
        8000
    """

    model_config = SettingsConfigDict(env_prefix="BYZER_LIKE_", extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Interface the HTTP proxy listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    replicas: int = Field(default=1, ge=1, le=256, description="Gateway replicas (Serve ingress replicas).")
    max_ongoing_requests: int = Field(default=1000, ge=1, description="Requests one gateway replica runs at once.")
    request_timeout_s: float | None = Field(default=None, gt=0,
                                            description="Longest non-streamed request, in seconds (504 after).")
