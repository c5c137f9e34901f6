"""Where a deploy stands: per worker and overall, kept in the cluster so any process can ask.

Seed 000's ``deploy_status``.
The router reports the phase of its deploy; the last report is also kept in Ray's internal KV (the GCS), so a
deploy that failed (its router and workers gone) still answers ``status`` with the reason.

Phases: ``queued`` (the worker waits for a node), ``downloading`` (bytes done / total), ``loading`` (the engine
loads), ``ready``, ``failed`` (with the engine's or the download's reason).

Example:
    >>> overall([{"phase": "ready"}, {"phase": "downloading", "done": 5, "total": 10}])
    'downloading'
"""

from __future__ import annotations

import json
import uuid
from typing import Any

KV_NAMESPACE = "byzer_like_deploys"
QUEUED, DOWNLOADING, LOADING, READY, FAILED = "queued", "downloading", "loading", "ready", "failed"
_ORDER = (DOWNLOADING, QUEUED, LOADING)  # the overall phase is the least advanced one a worker is in


def new_id(alias: str) -> str:
    """A deployment id: the alias and a random suffix (``smol@3fa2c1d0``)."""
    return f"{alias}@{uuid.uuid4().hex[:8]}"


def alias_of(id_or_alias: str) -> str:
    """The alias a deployment id or alias names."""
    return id_or_alias.split("@", 1)[0]


def overall(workers: list[dict[str, Any]]) -> str:
    """The deploy's phase from its workers' phases (no worker: ``queued``)."""
    phases = {w.get("phase", QUEUED) for w in workers}
    if FAILED in phases:
        return FAILED
    for phase in _ORDER:
        if phase in phases:
            return phase
    return READY if phases else QUEUED


def with_percent(state: dict[str, Any]) -> dict[str, Any]:
    """A worker's state with ``percent`` added while downloading with a known size."""
    if state.get("phase") == DOWNLOADING and state.get("total"):
        return {**state, "percent": round(100.0 * state.get("done", 0) / state["total"], 1)}
    return state


def save(status: dict[str, Any]) -> None:
    """Keep the latest status of the alias's deploy in the cluster."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(status["alias"], json.dumps(status), overwrite=True, namespace=KV_NAMESPACE)


def load(alias: str) -> dict[str, Any] | None:
    """The last status kept for ``alias`` (None when none)."""
    from ray.experimental.internal_kv import _internal_kv_get

    data = _internal_kv_get(alias, namespace=KV_NAMESPACE)
    return None if data is None else json.loads(data)


def forget(alias: str) -> None:
    """Drop the kept status of ``alias``."""
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(alias, namespace=KV_NAMESPACE)
