"""The router's registry of an alias's LoRA adapters: which exist, which requests use them, when one may go.

The registry is the source of truth for "which adapters does this alias serve": every worker loads every adapter
in it (workers started later too), requests naming an adapter outside it are a 404, and an adapter being removed
takes no new request while the ones using it finish.

Example:
    >>> reg = AdapterRegistry("smol", [AdapterSpec(name="banana", source="/lora")])
    >>> with reg.using("banana"):
    ...     pass
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from byzer_like.errors import AliasExistsError, ModelNotFoundError
from byzer_like.spec import AdapterSpec

LOADING, READY, REMOVING = "loading", "ready", "removing"
KV_NAMESPACE = "byzer_like_adapters"  # Ray's internal KV (in the GCS): an alias's adapters outlive its router


@dataclass
class AdapterEntry:
    """One adapter of the alias and its counters."""

    spec: AdapterSpec
    phase: str = LOADING
    requests: int = 0
    running: int = 0
    errors: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def stat(self) -> dict[str, Any]:
        """What ``stat`` shows of this adapter (the source without credentials)."""
        return {"name": self.spec.name, "source": display_source(self.spec.source), "scale": self.spec.scale,
                "phase": self.phase, "requests": self.requests, "running": self.running, "errors": self.errors,
                **{k: v for k, v in self.info.items() if k in ("kind", "rank", "alpha")}}


class AdapterRegistry:
    """The adapters of one alias.

    Args:
        alias: The alias (for messages).
        adapters: Adapters given at deploy time (loaded by every worker before it serves).
    """

    def __init__(self, alias: str, adapters: Iterable[AdapterSpec] = ()) -> None:
        self.alias = alias
        self.entries: dict[str, AdapterEntry] = {a.name: AdapterEntry(a) for a in adapters}

    def to_load(self, loaded: set[str]) -> list[AdapterSpec]:
        """Adapters a new worker still has to load (being added counts; being removed does not)."""
        return [e.spec for name, e in self.entries.items() if name not in loaded and e.phase != REMOVING]

    def mark_ready(self, name: str | None = None, info: dict[str, Any] | None = None) -> None:
        """Adapter ``name`` (default: every loading one) now serves requests."""
        for entry in self.entries.values() if name is None else [self.entries[name]]:
            if entry.phase == LOADING:
                entry.phase = READY
                entry.info = info or entry.info

    def begin_add(self, adapter: AdapterSpec) -> AdapterEntry:
        """Register a new adapter as loading.

        Raises:
            AliasExistsError: the name is taken (remove it first).
        """
        if (old := self.entries.get(adapter.name)) is not None:
            raise AliasExistsError(f"adapter '{adapter.name}' already exists on '{self.alias}' ({old.phase}); "
                                   f"remove it first: `byzer-like adapters remove {self.alias} {adapter.name}`",
                                   param="adapter")
        entry = self.entries[adapter.name] = AdapterEntry(adapter)
        return entry

    def drop(self, name: str) -> None:
        """Forget adapter ``name``."""
        self.entries.pop(name, None)

    def get(self, name: str) -> AdapterEntry:
        """The serving adapter ``name``.

        Raises:
            ModelNotFoundError: no such adapter (or it is being added or removed).
        """
        entry = self.entries.get(name)
        if entry is None or entry.phase != READY:
            have = ", ".join(sorted(n for n, e in self.entries.items() if e.phase == READY)) or "none"
            state = "" if entry is None else f" (it is {entry.phase})"
            raise ModelNotFoundError(f"adapter '{name}' is not loaded on '{self.alias}'{state}; its adapters: {have}; "
                                     f"add one with `byzer-like adapters add {self.alias} {name} SOURCE`",
                                     param="adapter", code="adapter_not_found")
        return entry

    @contextlib.contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Count one request on adapter ``name`` while it runs (``None``: the base model, nothing counted)."""
        entry = self.begin(name)
        ok = False
        try:
            yield
            ok = True
        finally:
            self.end(entry, ok)

    def begin(self, name: str | None) -> AdapterEntry | None:
        """Count one request starting on adapter ``name`` (None for the base model); ``end`` it when it ends."""
        if name is None:
            return None
        entry = self.get(name)
        entry.requests += 1
        entry.running += 1
        entry.idle.clear()
        return entry

    @staticmethod
    def end(entry: AdapterEntry | None, ok: bool) -> None:
        """A request ``begin`` counted has ended (``ok`` False counts an error)."""
        if entry is None:
            return
        if not ok:
            entry.errors += 1
        entry.running -= 1
        if entry.running == 0:
            entry.idle.set()

    async def begin_remove(self, name: str, timeout_s: float) -> AdapterEntry:
        """Stop new requests on ``name`` and wait (up to ``timeout_s``) for the running ones to end."""
        entry = self.get(name)
        entry.phase = REMOVING
        try:
            await asyncio.wait_for(entry.idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            entry.phase = READY
            raise
        return entry

    def stat(self) -> list[dict[str, Any]]:
        """Each adapter's name, source, phase and request counts."""
        return [entry.stat() for entry in self.entries.values()]

    def specs(self) -> list[AdapterSpec]:
        """The adapters that serve or are being added (what a restarted router must load)."""
        return [e.spec for e in self.entries.values() if e.phase != REMOVING]


def display_source(source: str) -> str:
    """``source`` as shown to users: a URL loses its credentials and query string (tokens live there)."""
    parts = urllib.parse.urlsplit(source)
    if not parts.scheme or not parts.netloc:
        return source
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def save(alias: str, adapters: Iterable[AdapterSpec]) -> None:
    """Keep ``alias``'s adapter list in the cluster, so a restarted router serves them again."""
    from ray.experimental.internal_kv import _internal_kv_put

    data = json.dumps([a.model_dump() for a in adapters])
    _internal_kv_put(alias, data, overwrite=True, namespace=KV_NAMESPACE)


def load(alias: str) -> list[AdapterSpec] | None:
    """The adapter list kept for ``alias`` (None when nothing was kept)."""
    from ray.experimental.internal_kv import _internal_kv_get

    data = _internal_kv_get(alias, namespace=KV_NAMESPACE)
    return None if data is None else [AdapterSpec.model_validate(a) for a in json.loads(data)]


def forget(alias: str) -> None:
    """Drop what was kept for ``alias`` (undeploy)."""
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(alias, namespace=KV_NAMESPACE)
