"""Prometheus series of routers, workers and the gateway, exported through Ray's metrics agent.

Every process records into ``ray.util.metrics``; Ray's agent on each node serves them at that node's metrics
export address (``byzer-like cluster status`` prints it) and the Ray dashboard's Metrics view reads them. Ray
prefixes user series with ``ray_`` and adds ``_total`` to counters, so ``byzer_like_requests`` is scraped as
``ray_byzer_like_requests_total``. Labels are bounded: ``alias``, ``backend``, ``worker`` (the worker's index),
``adapter`` (``""`` for the base model), ``outcome`` (ok/error/cancelled), ``type`` (our error class), ``phase``,
``direction`` — never a prompt, a key or a URL.

In a process that has not joined a Ray cluster (unit tests, the CLI before it connects) every call is a no-op.

Example:
    >>> m = AliasMetrics("chat", "llama_cpp")   # in the router actor
    >>> m.request("0", "", "ok", seconds=0.2)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

PREFIX = "byzer_like_"
GAUGE_REFRESH_S = 2.0
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
ALIAS = ("alias", "backend")

# name -> (kind, description, extra tag keys); the single table every recorder and the Grafana JSON follow.
SERIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requests": ("counter", "Requests finished, by worker, adapter and outcome (ok, error, cancelled).",
                 ("worker", "adapter", "outcome")),
    "errors": ("counter", "Failed requests by error type.", ("worker", "type")),
    "request_retries": ("counter", "Requests re-sent to another worker after theirs died.", ()),
    "queue_length": ("gauge", "Requests waiting for a free worker slot.", ()),
    "running_requests": ("gauge", "Requests running on a worker.", ("worker",)),
    "workers": ("gauge", "Workers by phase (starting, ready, draining).", ("phase",)),
    "worker_restarts": ("counter", "Workers started to replace dead ones.", ()),
    "scaling_events": ("counter", "Pool size changes by direction (up, down).", ("direction",)),
    "queue_seconds": ("histogram", "Seconds a request waited for a worker slot.", ()),
    "time_to_first_token_seconds": ("histogram", "Seconds from arrival to the first streamed chunk.", ("adapter",)),
    "request_seconds": ("histogram", "Seconds from arrival to the last byte of the answer.", ("adapter",)),
    "prompt_tokens": ("counter", "Prompt tokens of answered requests.", ("worker", "adapter")),
    "completion_tokens": ("counter", "Completion tokens of answered requests.", ("worker", "adapter")),
    # SaaS proxies (recorded in the worker that calls the provider)
    "upstream_seconds": ("histogram", "Seconds one upstream request took, retries included.", ()),
    "upstream_retries": ("counter", "Upstream calls retried (429, 5xx, timeouts, lost connections).",
                         ("worker", "type")),
    "rate_limited": ("counter", "Upstream 429 answers.", ("worker",)),
    "retry_after_seconds": ("gauge", "The last Retry-After the provider sent.", ("worker",)),
}
GATEWAY_SERIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gateway_requests": ("counter", "HTTP requests answered by the gateway (all replicas).",
                         ("route", "status")),
    "gateway_request_seconds": ("histogram", "Seconds to the response head at the gateway.", ("route",)),
}


def exported_name(name: str, kind: str) -> list[str]:
    """The names Prometheus scrapes for one of our series (Ray's prefix; counters ``_total``, histograms parts)."""
    base = f"ray_{PREFIX}{name}"
    if kind == "counter":
        return [f"{base}_total"]
    if kind == "histogram":
        return [f"{base}_bucket", f"{base}_count", f"{base}_sum"]
    return [base]


def _active() -> bool:
    return ray.is_initialized()


class _Series:
    """The ``ray.util.metrics`` objects of one table, created once per process (Ray refuses duplicates)."""

    _made: dict[str, Any] = {}

    @classmethod
    def get(cls, name: str, table: dict[str, tuple[str, str, tuple[str, ...]]], base: tuple[str, ...]) -> Any:
        metric = cls._made.get(name)
        if metric is None:
            from ray.util import metrics as rm

            kind, description, extra = table[name]
            keys = base + extra
            if kind == "counter":
                metric = rm.Counter(PREFIX + name, description=description, tag_keys=keys)
            elif kind == "gauge":
                metric = rm.Gauge(PREFIX + name, description=description, tag_keys=keys)
            else:
                metric = rm.Histogram(PREFIX + name, description=description, boundaries=LATENCY_BUCKETS,
                                      tag_keys=keys)
            cls._made[name] = metric
        return metric


FLUSH_S = 0.05  # recorded values wait at most this long before they reach Ray's metrics


class AliasMetrics:
    """What one alias's router or worker records; every method is cheap and never raises."""

    def __init__(self, alias: str, backend: str) -> None:
        self.base = {"alias": alias, "backend": backend}
        self.on = _active()
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}
        self._workers: set[str] = set()
        self._pending: list[tuple[str, float, dict[str, str]]] = []

    def _record(self, name: str, value: float, **tags: str) -> None:
        if not self.on:
            return
        # NOTE: recorded in batches every FLUSH_S, after the answers have left: off each request's latency
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._now(name, value, tags)
            return
        self._pending.append((name, value, tags))
        if len(self._pending) == 1:
            loop.call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for name, value, tags in pending:
            if SERIES[name][0] == "counter":  # NOTE: one increment per series and batch
                key = (name, tuple(tags.items()))
                counts[key] = counts.get(key, 0.0) + value
            else:
                self._now(name, value, tags)
        for (name, tags), value in counts.items():
            self._now(name, value, dict(tags))

    def _now(self, name: str, value: float, tags: dict[str, str]) -> None:
        if not self.on:
            return
        try:
            metric = _Series.get(name, SERIES, ALIAS)
            kind = SERIES[name][0]
            all_tags = {**self.base, **tags}
            if kind == "counter":
                if value > 0:
                    metric.inc(value, tags=all_tags)
            elif kind == "gauge":
                key = (name, tuple(sorted(tags.items())))
                now = time.monotonic()
                last = self._gauges.get(key)
                # NOTE: unchanged gauges are re-sent every few seconds only (one set once went missing from the export)
                if last is None or last[0] != value or now - last[1] > GAUGE_REFRESH_S:
                    self._gauges[key] = (value, now)
                    metric.set(value, tags=all_tags)
            else:
                metric.observe(value, tags=all_tags)
        except Exception:  # noqa: BLE001 - metrics never fail a request
            self.on = False

    # -- router ------------------------------------------------------------------------------------------
    def request(self, worker: str, adapter: str, outcome: str, seconds: float, queue_s: float | None = None,
                error_type: str | None = None) -> None:
        """One finished request (any outcome), its latency and, when it waited, its time in the queue."""
        self._record("requests", 1, worker=worker, adapter=adapter, outcome=outcome)
        if outcome == "ok":
            self._record("request_seconds", seconds, adapter=adapter)
        if queue_s is not None:
            self._record("queue_seconds", queue_s)
        if error_type is not None:
            self._record("errors", 1, worker=worker, type=error_type)

    def first_token(self, adapter: str, seconds: float) -> None:
        """Seconds from a stream's arrival to its first chunk."""
        self._record("time_to_first_token_seconds", seconds, adapter=adapter)

    def tokens(self, worker: str, adapter: str, usage: Any) -> None:
        """Prompt and completion tokens of an answer."""
        self._record("prompt_tokens", getattr(usage, "prompt_tokens", 0) or 0, worker=worker, adapter=adapter)
        self._record("completion_tokens", getattr(usage, "completion_tokens", 0) or 0, worker=worker,
                     adapter=adapter)

    def retry(self) -> None:
        """A request re-sent after its worker died."""
        self._record("request_retries", 1)

    def pool(self, queued: int, running: dict[str, int], phases: dict[str, int]) -> None:
        """The gauges: queue length, running requests per worker, workers per phase."""
        self._record("queue_length", queued)
        for worker in self._workers - running.keys():  # gone workers read 0, not their last value
            self._record("running_requests", 0, worker=worker)
        self._workers = set(running)
        for worker, count in running.items():
            self._record("running_requests", count, worker=worker)
        for phase, count in phases.items():
            self._record("workers", count, phase=phase)

    def restart(self) -> None:
        """A worker started in place of a dead one."""
        self._record("worker_restarts", 1)

    def scaled(self, direction: str, count: int) -> None:
        """The pool grew (``up``) or shrank (``down``) by ``count``."""
        self._record("scaling_events", count, direction=direction)

    # -- SaaS workers ------------------------------------------------------------------------------------
    def upstream(self, seconds: float) -> None:
        """One upstream request's time, retries included."""
        self._record("upstream_seconds", seconds)

    def upstream_retry(self, worker: str, error_type: str, rate_limited: bool, retry_after: float | None) -> None:
        """One retried upstream call; a 429 also counts as rate limited with its Retry-After."""
        self._record("upstream_retries", 1, worker=worker, type=error_type)
        if rate_limited:
            self._record("rate_limited", 1, worker=worker)
            if retry_after is not None:
                self._record("retry_after_seconds", float(retry_after), worker=worker)


class GatewayRayMetrics:
    """The gateway's per-route HTTP series in Ray's metrics, so every replica is counted."""

    def __init__(self) -> None:
        self.on = _active()

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        if not self.on:
            return
        try:
            tags = {"route": route}
            _Series.get("gateway_requests", GATEWAY_SERIES, ()).inc(1, tags={**tags, "status": str(status)})
            _Series.get("gateway_request_seconds", GATEWAY_SERIES, ()).observe(seconds, tags=tags)
        except Exception:  # noqa: BLE001 - metrics never fail a request
            self.on = False


def all_series() -> dict[str, str]:
    """Every scraped name we export -> its kind (for the Grafana JSON check and the docs)."""
    out = {}
    for table in (SERIES, GATEWAY_SERIES):
        for name, (kind, _, _) in table.items():
            for exported in exported_name(name, kind):
                out[exported] = kind
    return out
