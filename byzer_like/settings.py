"""Process settings (not deployment specs): read from ``BYZER_LIKE_*`` environment variables.

Example:
    BYZER_LIKE_RAY_PORT=6380 byzer-like deploy --model smol   # an embedded head on port 6380
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClusterSettings(BaseSettings):
    """How an embedded local Ray head node is started."""

    model_config = SettingsConfigDict(env_prefix="BYZER_LIKE_")

    ray_port: int = Field(default=6379, ge=1, le=65535, description="GCS port of an embedded head node.")
    dashboard_port: int = Field(default=8265, ge=1, le=65535, description="Dashboard port of an embedded head.")
    ray_num_cpus: int | None = Field(default=None, ge=1, description="CPUs the embedded head offers (default: all).")
