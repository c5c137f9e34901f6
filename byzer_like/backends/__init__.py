"""Engines and providers behind the ``Backend`` interface, resolved by name from the registry."""

from byzer_like.backends.base import Backend, EngineOptions
from byzer_like.backends.registry import register_backend, resolve_backend, resolve_spec

__all__ = ["Backend", "EngineOptions", "register_backend", "resolve_backend", "resolve_spec"]
