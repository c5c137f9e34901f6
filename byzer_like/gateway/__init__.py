"""The HTTP gateway: OpenAI, TGI and the seeds' simple endpoints for every deployed alias, on Ray Serve.

Example:
    >>> from byzer_like.gateway import GatewaySettings, build_app
    >>> app = build_app(GatewaySettings())  # doctest: +SKIP
"""

from byzer_like.gateway.app import build_app
from byzer_like.gateway.auth import KeyTable, load_keys
from byzer_like.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "KeyTable", "build_app", "load_keys"]
