"""The router actor: one per alias, named by the alias; owns the worker table, routes, queues, heals and scales.

The router holds no lock while waiting: a request that finds every slot taken parks a future in a bounded FIFO
queue, and the release path hands the freed slot straight to the oldest waiter. A slot is returned however the
request ends (done, error, cancelled, caller gone); a stream holds its slot until it ends. Streams are read by the
caller straight from the worker: the router grants the slot (``open_stream``) and takes it back when the stream
ends (``close_stream``; see ``stream_lease``).

A living pool (``shared/DESIGN.md``): each worker keeps one ``watch`` call open, which fails the moment the worker
dies (``kill -9``, node loss, engine crash), and a periodic ``check_health`` catches hung or broken engines. A dead
worker is taken out of the table at once (``stat``'s ``healthy`` and ``phase`` say so); its unary requests, and
streams that had sent nothing yet, are retried on another worker (``max_retries``); a stream that had already sent
chunks ends with a ``BackendUnavailableError`` the caller sees. A control loop keeps the worker count where the
autoscaling policy (``autoscale.decide``, a pure function) wants it: it replaces dead workers (with backoff and a
restart budget per window, after which the alias reports ``degraded``), adds workers under load, and drains idle
ones (a draining worker takes no new request and leaves when its running ones end).

Example:
    >>> router = RouterActor.options(name="smol").remote(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray import exceptions as rex

from byzer_like import adapter_registry, deploy_status
from byzer_like._ray import NAMESPACE, translate
from byzer_like.adapter_registry import AdapterEntry, AdapterRegistry
from byzer_like.autoscale import LoadSample, ScalerState, decide
from byzer_like.errors import BackendUnavailableError, ByzerLikeError, ModelLoadError
from byzer_like.metrics import AliasMetrics
from byzer_like.policy import DEAD, DRAINING, READY, STARTING, SlotPool, WorkerSlot, table_stat
from byzer_like.protocol import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageRequest,
    ImageResponse,
    SpeechRequest,
    SpeechResponse,
    TranscriptionRequest,
    TranscriptionResponse,
)
from byzer_like.spec import AdapterSpec, DeploySpec
from byzer_like.stream_lease import UNCLAIMED_S, Lease, StreamEnd
from byzer_like.worker import Worker

logger = logging.getLogger(__name__)
CONTROL_CALLS = 8  # worker concurrency kept free for watch/health/describe/shutdown beside the request slots
TICK_S = 0.25  # control loop period
EVENTS_KEPT = 50
WORKER_DIED = (rex.RayActorError, rex.ActorUnavailableError)  # the worker itself is gone (not an engine error)
WorkerActor = ray.remote(Worker)


@dataclass
class _Held:
    """A granted stream lease: its worker row, adapter count and times (``time.perf_counter``)."""

    row: WorkerSlot
    adapter: AdapterEntry | None
    adapter_name: str
    arrived: float
    start: float


class Router:
    """Routes an alias's requests over its workers, and keeps the pool alive and sized.

    Args:
        spec: The resolved deployment spec.
    """

    def __init__(self, spec: DeploySpec, deploy_id: str | None = None) -> None:
        self.spec = spec
        self.deploy_id = deploy_id or deploy_status.new_id(spec.alias)
        self.deploy_phase = deploy_status.QUEUED
        self.deploy_error: str | None = None
        self.scaling = spec.scaling
        self.slots = SlotPool([], max_queue=spec.queue.max_queue, timeout_s=spec.queue.request_timeout_s,
                              name=spec.alias)
        self.created = time.time()
        self.next_index = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.deaths: deque[float] = deque()  # monotonic times of worker deaths (restart budget)
        self.credits: deque[int] = deque()  # restarts count of dead workers awaiting a replacement
        self.retries = 0
        self.total_restarts = 0
        self.last_error: str | None = None
        self.degraded = False
        self.scaler = ScalerState()
        self.next_start_at = 0.0  # backoff: no new worker before this monotonic time
        self.next_capacity_check = 0.0
        self.desired = spec.initial_workers
        self.capacity_ok = True
        self.next_health_at = time.monotonic() + self.scaling.health_check_period_s
        self.wakeup = asyncio.Event()
        self.loop_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.unwatched: list[WorkerSlot] = []
        self.adapters = AdapterRegistry(spec.alias, spec.adapters)
        self.metrics = AliasMetrics(spec.alias, spec.backend.registry_key)
        self.leases: dict[int, _Held] = {}
        self.next_lease = 0
        self.next_lease_check = 0.0
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self._reattach()

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self, exit_on_failure: bool = False) -> None:
        """Create the first workers and load the engine in each; on any failure, remove them all and raise.

        Args:
            exit_on_failure: Also end this router after a failure (an async deploy: nobody waits to clean up).
        """
        rows = [self._create_worker() for _ in range(self.spec.initial_workers)]
        self._save_status()
        poller = asyncio.ensure_future(self._poll_progress())
        try:
            await asyncio.wait_for(asyncio.gather(*(self._load(row) for row in rows)), self.spec.deploy_timeout_s)
        except BaseException as exc:
            self._kill_workers()
            if isinstance(exc, asyncio.TimeoutError):
                err: ByzerLikeError = ModelLoadError(
                    f"workers of '{self.spec.alias}' did not load within {self.spec.deploy_timeout_s:g}s; the "
                    "cluster may lack free resources (see `byzer-like cluster status`)")
            else:
                err = translate(exc)
            self.deploy_phase, self.deploy_error = deploy_status.FAILED, err.message
            self._save_status()
            if exit_on_failure:
                self._spawn(self._exit())
            raise err if isinstance(err, ModelLoadError) else ModelLoadError(err.message) from None
        finally:
            poller.cancel()
        self.adapters.mark_ready()
        adapter_registry.save(self.spec.alias, self.adapters.specs())
        self.deploy_phase = deploy_status.READY
        self._save_status()
        self._event(0, len(rows), "deployed")
        self._start_loop()

    def begin(self) -> str:
        """Start loading in the background and answer at once (an async deploy); ``status`` follows it.

        Returns:
            The deployment id.
        """
        self._spawn(self._start_in_background())
        return self.deploy_id

    async def _start_in_background(self) -> None:
        try:
            await self.start(exit_on_failure=True)
        except Exception:  # noqa: BLE001 - the reason is in the deploy status; this router ends itself
            logger.warning("deploy of %s failed: %s", self.spec.alias, self.deploy_error)

    async def _poll_progress(self) -> None:
        """While the first workers start: ask each for its phase (downloading bytes, loading) and keep it."""
        while True:
            await asyncio.sleep(0.5)
            rows = [r for r in self.slots.table if r.phase == STARTING]
            results = await asyncio.gather(*(asyncio.wait_for(r.handle.progress.remote(), 2.0) for r in rows),
                                           return_exceptions=True)
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, dict):
                    row.progress = result
            self._save_status()

    def deploy_status(self) -> dict[str, Any]:
        """The deploy's id, overall phase, failure reason and each worker's phase (``status`` command)."""
        workers = [{"worker": r.index, **deploy_status.with_percent(r.progress if r.phase == STARTING
                                                                      else {"phase": r.phase})}
                   for r in self.slots.table]
        phase = self.deploy_phase
        if phase not in (deploy_status.READY, deploy_status.FAILED):
            phase = deploy_status.overall([w for w in workers])
        return {"id": self.deploy_id, "alias": self.spec.alias, "phase": phase, "error": self.deploy_error,
                "backend": self.spec.backend.registry_key, "started": round(self.created, 3),
                "elapsed_s": round(time.time() - self.created, 1), "workers": workers}

    def _save_status(self) -> None:
        try:
            deploy_status.save(self.deploy_status())
        except Exception:  # noqa: BLE001 - the status is informative; a GCS hiccup must not fail the deploy
            logger.warning("could not keep the deploy status of %s", self.spec.alias, exc_info=True)

    async def _exit(self) -> None:
        await asyncio.sleep(0.2)  # NOTE: let the failed start() answer first
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _reattach(self) -> None:
        """A restarted router finds its detached workers by name; counters start afresh."""
        prefix = self.spec.alias + "/worker-"
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)]
        for name in sorted(names, key=lambda n: int(n.rsplit("-", 1)[1])):
            index = int(name.rsplit("-", 1)[1])
            row = WorkerSlot(index=index, capacity=self.spec.worker_concurrency, phase=READY,
                             handle=ray.get_actor(name, namespace=NAMESPACE))
            self.slots.table.append(row)
            self.next_index = max(self.next_index, index + 1)
        self.deploy_phase = deploy_status.READY
        kept = adapter_registry.load(self.spec.alias)  # NOTE: adapters added after deploy are kept in the GCS
        self.adapters = AdapterRegistry(self.spec.alias, self.spec.adapters if kept is None else kept)
        self.adapters.mark_ready()
        self._event(0, len(self.slots.table), "router restarted; re-attached to its workers")
        self.unwatched = list(self.slots.table)  # NOTE: no event loop runs in __init__; watched on first use

    async def shutdown(self, graceful_s: float = 10.0) -> None:
        """Refuse new requests, let each engine release its resources, then kill the workers."""
        self.slots.close(f"'{self.spec.alias}' is being undeployed")
        if self.loop_task is not None:
            self.loop_task.cancel()
        for task in list(self.tasks):
            task.cancel()
        handles = [row.handle for row in self.slots.table]
        try:
            await asyncio.wait_for(asyncio.gather(*(h.shutdown.remote() for h in handles), return_exceptions=True),
                                   graceful_s)
        except asyncio.TimeoutError:
            logger.warning("workers of %s did not shut down within %ss; killing them", self.spec.alias, graceful_s)
        self._kill_workers()

    def _kill_workers(self) -> None:
        for row in self.slots.table:
            _kill(row.handle)
        self.slots.table.clear()

    # -- requests --------------------------------------------------------------------------------------------
    async def chat(self, req: ChatRequest) -> ChatResponse:
        """Answer a chat request on the LRU worker (with its adapter, if it names one)."""
        with self.adapters.using(req.adapter):
            return await self._unary("chat", req)

    async def complete(self, req: CompletionRequest) -> ChatResponse:
        """Complete a prompt on the LRU worker."""
        with self.adapters.using(req.adapter):
            return await self._unary("complete", req)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts on the LRU worker."""
        return await self._unary("embed", req)

    async def transcribe(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """Transcribe audio on the LRU worker."""
        return await self._unary("transcribe", req)

    async def speech(self, req: SpeechRequest) -> SpeechResponse:
        """Synthesise speech on the LRU worker."""
        return await self._unary("speech", req)

    async def generate_image(self, req: ImageRequest) -> ImageResponse:
        """Generate images on the LRU worker."""
        return await self._unary("generate_image", req)

    # -- streams read by the caller from the worker (see ``stream_lease``) ------------------------------------
    async def open_stream(self, adapter: str | None = None) -> Lease:
        """Grant a slot (LRU worker, queue, adapter count) for one stream the caller reads from the worker."""
        arrived = time.perf_counter()
        self._check_serving()
        entry = self.adapters.begin(adapter)
        try:
            row = await self.slots.acquire()
        except BaseException:
            self.adapters.end(entry, False)
            raise
        lease_id, self.next_lease = self.next_lease, self.next_lease + 1
        self.leases[lease_id] = _Held(row, entry, adapter or "", arrived, time.perf_counter())
        return Lease(lease_id, row.handle)

    def close_stream(self, lease_id: int, end: StreamEnd) -> bool:
        """A leased stream ended: hand its slot back (once) and count it.

        Returns:
            True when its worker died before sending anything and the caller may ask for a new lease.
        """
        retry = end.outcome == "died" and not end.sent and end.attempt < self.scaling.max_retries
        held = self.leases.pop(lease_id, None)
        if held is None:  # NOTE: already closed (a cancel and the worker's own report), or a restarted router
            if retry:
                self._count_retry()
            return retry
        row, now, ok = held.row, time.perf_counter(), end.outcome == "ok"
        self.slots.release(row, now - held.start, ok)
        self.adapters.end(held.adapter, ok)
        if end.usage is not None:
            row.count_tokens(end.usage)
            self.metrics.tokens(str(row.index), held.adapter_name, end.usage)
        if end.first_s is not None:
            self.metrics.first_token(held.adapter_name, held.start - held.arrived + end.first_s)
        outcome, error_type = end.outcome, end.error_type
        if outcome == "died":
            self._worker_died(row, BackendUnavailableError(end.reason or "the worker died"))
            if retry:
                self._count_retry()
                return True
            outcome, error_type = "error", "BackendUnavailableError"
        self.metrics.request(str(row.index), held.adapter_name, outcome, now - held.arrived,
                             held.start - held.arrived, error_type)
        return False

    async def _take_back_unclaimed(self) -> None:
        """Close leases granted long ago whose streams do not run on their workers (a caller gone in between)."""
        old = time.perf_counter() - UNCLAIMED_S
        stale = {i: h for i, h in self.leases.items() if h.start < old}
        rows = {id(h.row): h.row for h in stale.values()}
        running: set[int] = set()
        for row in rows.values():
            if row.phase == DEAD:
                continue
            try:
                running.update(await asyncio.wait_for(row.handle.active_leases.remote(), 5.0))
            except Exception:  # noqa: BLE001 - unknown: keep its leases for the next check
                running.update(i for i, h in stale.items() if h.row is row)
        for lease_id in stale.keys() - running:
            if lease_id in self.leases:
                self.close_stream(lease_id, StreamEnd("cancelled"))

    async def _unary(self, method: str, req: Any) -> Any:
        attempt, arrived, adapter = 0, time.perf_counter(), getattr(req, "adapter", None) or ""
        self._check_serving()
        while True:
            row = await self.slots.acquire()
            start, ok, ref = time.perf_counter(), False, None
            outcome, error_type = "error", None
            try:  # NOTE: dispatch inside the try: a failing .remote() must still return the slot.
                ref = getattr(row.handle, method).remote(req)
                result = await ref
                ok, outcome = True, "ok"
                if (usage := getattr(result, "usage", None)) is not None:
                    row.count_tokens(usage)
                    self.metrics.tokens(str(row.index), adapter, usage)
                return result
            except asyncio.CancelledError:
                outcome = "cancelled"
                if ref is not None:
                    ray.cancel(ref)
                raise
            except WORKER_DIED as exc:
                error_type = "BackendUnavailableError"
                attempt = self._retry_after_death(row, exc, attempt)
                outcome = "retried"
            except Exception as exc:
                err = translate(exc)
                error_type = type(err).__name__
                raise err from None
            finally:
                end = time.perf_counter()
                self.slots.release(row, end - start, ok)
                if outcome != "retried":
                    self.metrics.request(str(row.index), adapter, outcome, end - arrived, start - arrived,
                                         error_type)

    def _retry_after_death(self, row: WorkerSlot, exc: BaseException, attempt: int) -> int:
        """A request's worker died: take it out, and return the next attempt number, or raise when none is left."""
        self._worker_died(row, exc)
        if attempt >= self.scaling.max_retries:
            raise translate(exc) from None
        self._count_retry()
        return attempt + 1

    def _count_retry(self) -> None:
        self.retries += 1
        self.metrics.retry()

    # -- supervision -----------------------------------------------------------------------------------------
    def _create_worker(self, restarts: int = 0) -> WorkerSlot:
        """Start a new worker actor (its engine loads in ``_load``) and add its row as ``starting``."""
        res = self.spec.resources
        index, self.next_index = self.next_index, self.next_index + 1
        handle = WorkerActor.options(
            name=self.spec.worker_name(index), namespace=NAMESPACE, lifetime="detached",
            num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker, resources=res.custom_resources or None,
            max_concurrency=self.spec.worker_concurrency + CONTROL_CALLS,
        ).remote(self.spec, index)
        row = WorkerSlot(index=index, capacity=self.spec.worker_concurrency, phase=STARTING, handle=handle,
                         restarts=restarts)
        self.slots.table.append(row)
        return row

    async def _load(self, row: WorkerSlot) -> None:
        """Load the engine of a new worker; then it serves (waiters first) and is watched."""
        await row.handle.start.remote()
        await self._load_adapters(row)
        try:
            row.where = await row.handle.where.remote()
        except Exception:  # noqa: BLE001 - only for stat
            row.where = {}
        if row.phase == STARTING:
            row.phase = READY
            row.idle_since = time.monotonic()
            self._spawn(self._watch(row))
            self.slots.wake()

    async def _load_adapters(self, row: WorkerSlot) -> None:
        """Load every adapter of the alias on a new worker, including any added while it loads."""
        loaded: set[str] = set()
        while todo := self.adapters.to_load(loaded):
            await asyncio.gather(*(row.handle.add_adapter.remote(a) for a in todo))
            loaded.update(a.name for a in todo)

    async def _add_worker(self, restarts: int) -> None:
        """Scale-up or replacement: a worker that fails to load counts as a death (backoff, budget)."""
        row = self._create_worker(restarts)
        try:
            await self._load(row)
        except Exception as exc:  # noqa: BLE001 - recorded; the control loop decides what next
            self._worker_died(row, exc, loading=True)

    async def _watch(self, row: WorkerSlot) -> None:
        try:
            await row.handle.watch.remote()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of this call means the worker is gone
            self._worker_died(row, exc)

    def _worker_died(self, row: WorkerSlot, exc: BaseException, *, loading: bool = False) -> None:
        """Take a dead worker out of the table at once; the control loop replaces it."""
        if row.phase == DEAD:
            return
        was_draining = row.phase == DRAINING
        row.phase = DEAD
        before = self._live()
        if row in self.slots.table:
            self.slots.table.remove(row)
        _kill(row.handle)
        reason = translate(exc).message if not isinstance(exc, ByzerLikeError) else exc.message
        what = "failed to load" if loading else "died"
        self.last_error = f"worker-{row.index} {what}: {reason}"
        logger.warning("%s: %s", self.spec.alias, self.last_error)
        if not was_draining:
            self.deaths.append(time.monotonic())
            self.credits.append(row.restarts + 1)
            self._event(before + 1, self._live(), self.last_error)
        self.wakeup.set()

    def _live(self) -> int:
        return sum(1 for row in self.slots.table if row.phase in (STARTING, READY))

    def _restart_budget_left(self, now: float) -> bool:
        window = self.scaling.restart_window_s
        while self.deaths and now - self.deaths[0] > window:
            self.deaths.popleft()
        return len(self.deaths) <= self.scaling.max_restarts

    # -- the control loop ------------------------------------------------------------------------------------
    def _start_loop(self) -> None:
        if self.loop_task is None:
            self.loop_task = asyncio.ensure_future(self._control_loop())
        while self.unwatched:
            self._spawn(self._watch(self.unwatched.pop()))

    def _check_serving(self) -> None:
        """Start supervising (a restarted router), and fail fast when the pool cannot serve at all."""
        if self.loop_task is None or self.unwatched:
            self._start_loop()
        if self.degraded and self._live() == 0:
            raise BackendUnavailableError(f"'{self.spec.alias}' is degraded and has no worker: {self.last_error}; "
                                          f"`byzer-like scale {self.spec.alias} --workers N` tries again")

    async def _control_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wakeup.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()
            try:
                now = time.monotonic()
                if now >= self.next_health_at:
                    self.next_health_at = now + self.scaling.health_check_period_s
                    self._spawn(self._check_health_all())
                if self.leases and now >= self.next_lease_check:
                    self.next_lease_check = now + UNCLAIMED_S / 3
                    self._spawn(self._take_back_unclaimed())
                self._finish_draining()
                self._scale(now)
                self._publish_gauges()
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad tick
                logger.exception("control loop of %s", self.spec.alias)

    def _publish_gauges(self) -> None:
        rows = self.slots.table
        phases = {p: sum(1 for r in rows if r.phase == p) for p in (STARTING, READY, DRAINING)}
        self.metrics.pool(len(self.slots.waiters), {str(r.index): r.running for r in rows}, phases)

    def _scale(self, now: float) -> None:
        rows = self.slots.table
        sample = LoadSample(
            workers=self._live(), ready=sum(1 for r in rows if r.phase == READY),
            running=sum(r.running for r in rows), queued=len(self.slots.waiters),
            idle_s=tuple((now - r.idle_since) if r.running == 0 else 0.0 for r in rows if r.phase == READY))
        decision = decide(self.scaling, self.spec.worker_concurrency, self.spec.resources.num_workers, sample,
                          self.scaler, now)
        if decision is None or decision.desired == sample.workers:
            if sample.workers and self.degraded and sample.ready:
                self.degraded = False
            return
        if decision.desired > sample.workers:
            self._grow(decision.desired - sample.workers, decision.reason, now)
        else:
            self._shrink(sample.workers - decision.desired, decision.reason)

    def _grow(self, count: int, reason: str, now: float) -> None:
        if not self._capacity_exists(now):
            return
        if self.credits:  # replacing dead workers: backoff and a budget per window
            if not self._restart_budget_left(now):
                if not self.degraded:
                    self._degrade(f"more than {self.scaling.max_restarts} worker deaths within "
                                  f"{self.scaling.restart_window_s:g}s; last: {self.last_error}")
                return
            if now < self.next_start_at:
                return
            self.next_start_at = now + min(30.0, 0.5 * 2 ** max(0, len(self.deaths) - 1))
        before, replaced = self._live(), 0
        for _ in range(count):
            restarts = self.credits.popleft() if self.credits else 0
            if restarts:
                self.total_restarts += 1
                replaced += 1
                self.metrics.restart()
            self._spawn(self._add_worker(restarts))
        self.desired = before + count
        self.metrics.scaled("up", count - replaced)  # replacements are restarts, not scaling
        self._event(before, before + count, reason)

    def _degrade(self, why: str) -> None:
        """Report ``degraded`` (kept in events); with no worker left, waiting requests fail now, not at timeout."""
        self.degraded = True
        self._event(self._live(), self._live(), f"degraded: {why}")
        if self._live() == 0:
            self.slots.fail_waiters(f"'{self.spec.alias}' is degraded: {self.last_error}")

    def _capacity_exists(self, now: float) -> bool:
        """Whether some live node could hold one more worker at all (its totals, not what is free right now).

        When none can (the node offering a custom resource was lost), the alias is ``degraded`` with the command
        that fixes it, and heals by itself once such a node joins (checked every 2 s).
        """
        if now < self.next_capacity_check:
            return self.capacity_ok
        self.next_capacity_check = now + 2.0
        need = self.spec.resources.per_worker()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        ok = any(all(have.get(k, 0.0) >= v for k, v in need.items()) for have in nodes)
        if not ok:  # NOTE: said on every check, so a later worker failure does not hide the fix
            wanted = ", ".join(f"{k}={v:g}" for k, v in need.items())
            custom = {k: v for k, v in need.items() if k not in ("CPU", "GPU")}
            fix = f" --resources '{json.dumps(custom)}'" if custom else f" --num-cpus {max(1, int(need.get('CPU', 1)))}"
            self.last_error = (f"no node of the cluster offers what a worker needs ({wanted}); add one: "
                               f"`ray start --address {ray.get_runtime_context().gcs_address}{fix}`")
            if self.capacity_ok:
                self._degrade(self.last_error)
        self.capacity_ok = ok
        return ok

    def _shrink(self, count: int, reason: str) -> None:
        """Drain ``count`` workers: the longest idle first, then the least busy."""
        ready = [r for r in self.slots.table if r.phase == READY]
        ready.sort(key=lambda r: (r.running, r.idle_since))
        before = self._live()
        for row in ready[:count]:
            row.phase = DRAINING
        self.desired = self._live()
        self.metrics.scaled("down", before - self._live())
        self._event(before, self._live(), reason)
        self._finish_draining()

    def _finish_draining(self) -> None:
        for row in [r for r in self.slots.table if r.phase == DRAINING and r.running == 0]:
            self.slots.table.remove(row)
            self._spawn(self._retire(row))

    async def _retire(self, row: WorkerSlot) -> None:
        try:
            await asyncio.wait_for(row.handle.shutdown.remote(), 10.0)
        except Exception:  # noqa: BLE001 - killed below either way
            pass
        _kill(row.handle)

    async def _check_health_all(self) -> None:
        rows = [r for r in self.slots.table if r.phase == READY]
        results = await asyncio.gather(*(self._check_one(r) for r in rows), return_exceptions=True)
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                self._worker_died(row, result)

    async def _check_one(self, row: WorkerSlot) -> None:
        try:
            await asyncio.wait_for(row.handle.check_health.remote(), self.scaling.health_check_timeout_s)
        except asyncio.TimeoutError:
            raise BackendUnavailableError(
                f"health check did not answer within {self.scaling.health_check_timeout_s:g}s") from None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _event(self, before: int, after: int, why: str) -> None:
        logger.info("%s: workers %s -> %s (%s)", self.spec.alias, before, after, why)
        self.events.append({"time": round(time.time(), 3), "from": before, "to": after, "why": why})

    # -- manual scaling --------------------------------------------------------------------------------------
    async def scale(self, workers: int) -> dict[str, Any]:
        """Set the worker count now; bounds move when ``workers`` lies outside them (a fixed pool moves both).

        Returns:
            The new ``min_workers``/``max_workers`` and the count being moved to.
        """
        low, high = self.scaling.bounds(self.spec.resources.num_workers)
        if low == high:
            low = high = workers
        low, high = min(low, workers), max(high, workers)
        self.scaling = self.scaling.model_copy(update={"min_workers": low, "max_workers": high})
        self.degraded = False
        current = self._live()
        self.scaler = ScalerState(last_up=time.monotonic())  # a manual change is not undone at once
        self._start_loop()
        if workers > current:
            self.credits.clear()
            self._grow(workers - current, f"scaled by hand to {workers}", time.monotonic())
        elif workers < current:
            self._shrink(current - workers, f"scaled by hand to {workers}")
        return {"min_workers": low, "max_workers": high, "workers": workers}

    # -- adapters --------------------------------------------------------------------------------------------
    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load a LoRA adapter on every worker; it serves once all have it (on any failure, none keeps it).

        Workers that start later (replacements, scale-up) load it before they serve.

        Returns:
            The adapter's ``stat`` entry.
        """
        entry = self.adapters.begin_add(adapter)
        rows = [r for r in self.slots.table if r.phase == READY]
        results = await asyncio.gather(*(r.handle.add_adapter.remote(adapter) for r in rows), return_exceptions=True)
        failed = [res for res in results if isinstance(res, BaseException) and not isinstance(res, WORKER_DIED)]
        if failed:
            self.adapters.drop(adapter.name)
            done = [r for r, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
            await asyncio.gather(*(r.handle.remove_adapter.remote(adapter.name) for r in done),
                                 return_exceptions=True)
            raise translate(failed[0]) from None
        info = next((res for res in results if isinstance(res, dict)), {})
        self.adapters.mark_ready(adapter.name, info)
        adapter_registry.save(self.spec.alias, self.adapters.specs())
        self._event(self._live(), self._live(), f"adapter '{adapter.name}' added")
        return entry.stat()

    async def remove_adapter(self, name: str) -> None:
        """Stop routing to adapter ``name``, wait for its running requests, then unload it from every worker."""
        await self.adapters.begin_remove(name, self.spec.queue.request_timeout_s)
        rows = [r for r in self.slots.table if r.phase in (READY, DRAINING)]
        results = await asyncio.gather(*(r.handle.remove_adapter.remote(name) for r in rows), return_exceptions=True)
        self.adapters.drop(name)
        adapter_registry.save(self.spec.alias, self.adapters.specs())
        self._event(self._live(), self._live(), f"adapter '{name}' removed")
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, WORKER_DIED):
                logger.warning("%s: removing adapter %s: %s", self.spec.alias, name, translate(result).message)

    def list_adapters(self) -> list[dict[str, Any]]:
        """Each adapter's name, source, phase and request counts."""
        return self.adapters.stat()

    # -- introspection ---------------------------------------------------------------------------------------
    async def stat(self) -> dict[str, Any]:
        """Byzerllm's stat JSON plus queue, running, errors, latency, phases, restarts and scaling events.

        Also the deploy phase and, for SaaS aliases, the workers' upstream counters (retries, rate limits).
        """
        out = table_stat(self.slots.table, self.spec.worker_concurrency, len(self.slots.waiters))
        out["deploy_phase"] = self.deploy_phase
        if self.spec.backend.is_saas:
            out["saas"] = await self._saas_counters()
        low, high = self.scaling.bounds(self.spec.resources.num_workers)
        out.update(alias=self.spec.alias, backend=self.spec.backend.registry_key,
                   uptime_s=round(time.time() - self.created, 1), current_workers=self._live(),
                   desired_workers=max(self.desired, self._live()),
                   ready_workers=sum(1 for r in self.slots.table if r.phase == READY),
                   min_workers=low, max_workers=high, retries=self.retries, total_restarts=self.total_restarts,
                   status="degraded" if self.degraded else "ok", last_error=self.last_error,
                   retry_after_s=self.slots.expected_wait(), adapters=self.adapters.stat(),
                   events=list(self.events)[-20:])
        return out

    async def _saas_counters(self) -> dict[str, Any]:
        """Per worker and summed: the proxies' requests, errors, retries, rate limits and last Retry-After."""
        rows = [r for r in self.slots.table if r.phase in (READY, DRAINING)]
        found = await asyncio.gather(*(asyncio.wait_for(r.handle.describe.remote(), 5.0) for r in rows),
                                     return_exceptions=True)
        keys = ("requests", "errors", "retries", "rate_limited", "prompt_tokens", "completion_tokens")
        workers = [{"worker": r.index, **{k: d.get(k) for k in (*keys, "last_retry_after_s", "upstream_seconds")}}
                   for r, d in zip(rows, found, strict=True) if isinstance(d, dict)]
        total: dict[str, Any] = {k: sum(w[k] or 0 for w in workers) for k in keys}
        after = [w["last_retry_after_s"] for w in workers if w["last_retry_after_s"] is not None]
        total["last_retry_after_s"] = after[-1] if after else None
        return {**total, "workers": workers}

    def get_spec(self) -> DeploySpec:
        """The spec this alias was deployed with."""
        return self.spec

    async def check_health(self) -> list[str | None]:
        """Per worker: None when healthy, else the error (a worker found dead is replaced)."""
        rows = list(self.slots.table)
        results = await asyncio.gather(*(self._check_one(r) for r in rows), return_exceptions=True)
        out = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, WORKER_DIED):
                self._worker_died(row, result)
            out.append(None if result is None else (result.message if isinstance(result, ByzerLikeError)
                                                    else translate(result).message))
        return out


def _kill(handle: Any) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


RouterActor = ray.remote(Router)
