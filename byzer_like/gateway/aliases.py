"""Reaching aliases from the gateway: one cached ``AsyncClient`` per alias, re-resolved when its router is gone.

A model name is an alias, ``ALIAS:ADAPTER`` (Ray Serve LLM's spelling for a LoRA adapter of an alias), or a bare
adapter name that exactly one alias serves; requests to an adapter carry ``adapter=`` down to the router.

A cached client whose router actor was undeployed (or replaced by a redeploy) fails with
``BackendUnavailableError``; we then look the alias up afresh: gone -> 404, redeployed -> retry once on the new
router (nothing was sent to the caller yet, so the retry is safe).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from byzer_like._ray import get_actor, translate
from byzer_like.client import AsyncClient
from byzer_like.errors import BackendUnavailableError, ByzerLikeError, InvalidRequestError, ModelNotFoundError
from byzer_like.pool import list_aliases

ADAPTER_METHODS = frozenset({"chat", "stream", "complete", "stream_complete"})


class Aliases:
    """The gateway's view of the deployed aliases.

    Args:
        timeout: Seconds a non-streamed request may take (None: no limit).

    Example:
        >>> answer = await Aliases().call("smol", "chat", [{"role": "user", "content": "hi"}])  # doctest: +SKIP
    """

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self._clients: dict[str, AsyncClient] = {}

    def client(self, alias: str) -> AsyncClient:
        """The cached client of ``alias``.

        Raises:
            ModelNotFoundError: no such alias.
        """
        client = self._clients.get(alias)
        if client is None:
            client = self._clients[alias] = AsyncClient(alias, timeout=self.timeout)
        return client

    def _stale(self, alias: str) -> bool:
        """Forget the cached client if its router is no longer the alias's router (raises 404 if none)."""
        cached = self._clients.pop(alias, None)
        fresh = get_actor(alias)
        if cached is not None and cached._router._actor_id == fresh._actor_id:  # noqa: SLF001
            self._clients[alias] = cached
            return False
        return True

    async def target(self, model: str) -> tuple[str, str | None]:
        """``(alias, adapter)`` for a model name: ``ALIAS``, ``ALIAS:ADAPTER`` or an adapter name of one alias.

        Raises:
            ModelNotFoundError: no alias or adapter has this name.
            InvalidRequestError: several aliases have an adapter of this name (say which with ``ALIAS:NAME``).
        """
        if ":" in model:
            alias, adapter = model.split(":", 1)
            return alias, adapter
        if model in self._clients:
            return model, None
        try:
            get_actor(model)
            return model, None
        except ModelNotFoundError:
            owners = await self._adapter_owners(model)
            if len(owners) == 1:
                return owners[0], model
            if owners:
                raise InvalidRequestError(f"adapter '{model}' exists on several aliases ({', '.join(owners)}); "
                                          f"name one as ALIAS:{model}", param="model") from None
            raise

    async def _adapter_owners(self, name: str) -> list[str]:
        aliases = await self.names()
        found = await asyncio.gather(*(self._has_adapter(a, name) for a in aliases))
        return [alias for alias, has in zip(aliases, found, strict=True) if has]

    async def _has_adapter(self, alias: str, name: str) -> bool:
        try:
            return any(a["name"] == name for a in await self.client(alias).adapters())
        except ByzerLikeError:
            return False

    async def call(self, alias: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``await client.<method>(...)`` on the alias (``alias`` may name an adapter: see :meth:`target`)."""
        alias = await self._with_adapter(alias, method, kwargs)
        try:
            return await getattr(self.client(alias), method)(*args, **kwargs)
        except BackendUnavailableError:
            if not self._stale(alias):
                raise
            return await getattr(self.client(alias), method)(*args, **kwargs)

    async def stream(self, alias: str, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """``client.<method>(...)`` streamed; re-resolves the alias only before the first chunk."""
        alias = await self._with_adapter(alias, method, kwargs)
        started = False
        gen = getattr(self.client(alias), method)(*args, **kwargs)
        try:
            async for item in gen:
                started = True
                yield item
        except BackendUnavailableError:
            if started or not self._stale(alias):
                raise
            await gen.aclose()
            gen = getattr(self.client(alias), method)(*args, **kwargs)
            async for item in gen:
                yield item
        finally:
            await gen.aclose()

    async def _with_adapter(self, model: str, method: str, kwargs: dict[str, Any]) -> str:
        alias, adapter = await self.target(model)
        if adapter is not None:
            if method not in ADAPTER_METHODS:
                raise InvalidRequestError(f"'{model}' is a LoRA adapter; adapters answer chat and completion "
                                          f"requests only: use the alias '{alias}' here", param="model")
            kwargs.setdefault("adapter", adapter)
        return alias

    async def health(self, alias: str) -> list[str | None]:
        """Per worker of ``alias``: None when healthy, else the problem (asks the router directly)."""
        try:
            return await get_actor(alias).check_health.remote()
        except ByzerLikeError:
            raise
        except Exception as exc:
            raise translate(exc) from None

    async def names(self) -> list[str]:
        """Every deployed alias."""
        return await asyncio.to_thread(list_aliases)
