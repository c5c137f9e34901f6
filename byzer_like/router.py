"""The router actor: one per alias, named by the alias. Owns the worker table, picks workers by LRU, queues.

The router holds no lock while waiting: a request that finds every slot taken parks a future in a bounded FIFO
queue, and the release path hands the freed slot straight to the oldest waiter. A slot is returned however the
request ends (done, error, cancelled, caller gone); a stream holds its slot until it ends.

Example:
    >>> router = RouterActor.options(name="smol").remote(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

import ray

from byzer_like._ray import NAMESPACE, translate
from byzer_like.errors import ByzerLikeError, ModelLoadError
from byzer_like.policy import SlotPool, WorkerSlot, table_stat
from byzer_like.protocol import (
    ChatRequest,
    ChatResponse,
    Chunk,
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
from byzer_like.spec import DeploySpec
from byzer_like.worker import Worker

logger = logging.getLogger(__name__)
CONTROL_CALLS = 8  # worker concurrency kept free for health/describe/shutdown beside the request slots


class Router:
    """Routes an alias's requests over its workers.

    Args:
        spec: The resolved deployment spec.
    """

    def __init__(self, spec: DeploySpec) -> None:
        self.spec = spec
        table = [WorkerSlot(index=i, capacity=spec.worker_concurrency) for i in range(spec.resources.num_workers)]
        self.slots = SlotPool(table, max_queue=spec.queue.max_queue, timeout_s=spec.queue.request_timeout_s,
                              name=spec.alias)
        self.workers: list[Any] = []
        self.created = time.time()
        if ray.get_runtime_context().was_current_actor_reconstructed:
            # NOTE: a restarted router re-attaches to its detached workers by name; counters start afresh.
            self.workers = [ray.get_actor(spec.worker_name(i), namespace=NAMESPACE) for i in range(len(table))]

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the workers and load the engine in each; on any failure, remove them all and raise."""
        res = self.spec.resources
        actor = ray.remote(Worker)
        for i in range(res.num_workers):
            self.workers.append(actor.options(
                name=self.spec.worker_name(i), namespace=NAMESPACE, lifetime="detached",
                num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker, resources=res.custom_resources or None,
                max_concurrency=self.spec.worker_concurrency + CONTROL_CALLS,
            ).remote(self.spec, i))
        try:
            await asyncio.gather(*(w.start.remote() for w in self.workers))
        except BaseException as exc:
            self._kill_workers()
            err = translate(exc)
            raise err if isinstance(err, ModelLoadError) else ModelLoadError(err.message) from None

    async def shutdown(self, graceful_s: float = 10.0) -> None:
        """Refuse new requests, let each engine release its resources, then kill the workers."""
        self.slots.close(f"'{self.spec.alias}' is being undeployed")
        try:
            await asyncio.wait_for(asyncio.gather(*(w.shutdown.remote() for w in self.workers),
                                                  return_exceptions=True), graceful_s)
        except asyncio.TimeoutError:
            logger.warning("workers of %s did not shut down within %ss; killing them", self.spec.alias, graceful_s)
        self._kill_workers()

    def _kill_workers(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []

    # -- requests --------------------------------------------------------------------------------------------
    async def chat(self, req: ChatRequest) -> ChatResponse:
        """Answer a chat request on the LRU worker."""
        return await self._unary("chat", req)

    async def complete(self, req: CompletionRequest) -> ChatResponse:
        """Complete a prompt on the LRU worker."""
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

    async def chat_stream(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """Stream a chat answer; the slot is held until the stream ends."""
        async for chunk in self._stream("chat_stream", req):
            yield chunk

    async def complete_stream(self, req: CompletionRequest) -> AsyncIterator[Chunk]:
        """Stream a completion; the slot is held until the stream ends."""
        async for chunk in self._stream("complete_stream", req):
            yield chunk

    async def _unary(self, method: str, req: Any) -> Any:
        pos = await self.slots.acquire()
        start, ok, ref = time.perf_counter(), False, None
        try:  # NOTE: dispatch inside the try: a failing .remote() must still return the slot.
            ref = getattr(self.workers[pos], method).remote(req)
            result = await ref
            ok = True
            if (usage := getattr(result, "usage", None)) is not None:
                self.slots.table[pos].count_tokens(usage)
            return result
        except asyncio.CancelledError:
            if ref is not None:
                ray.cancel(ref)
            raise
        except Exception as exc:
            raise translate(exc) from None
        finally:
            self.slots.release(pos, time.perf_counter() - start, ok)

    async def _stream(self, method: str, req: Any) -> AsyncIterator[Chunk]:
        pos = await self.slots.acquire()
        start, ok, gen = time.perf_counter(), False, None
        try:
            gen = getattr(self.workers[pos], method).remote(req)
            async for ref in gen:
                chunk = await ref
                if chunk.usage is not None:
                    self.slots.table[pos].count_tokens(chunk.usage)
                yield chunk
            ok = True
        except (asyncio.CancelledError, GeneratorExit):
            if gen is not None:
                ray.cancel(gen)
            raise
        except Exception as exc:
            raise translate(exc) from None
        finally:
            self.slots.release(pos, time.perf_counter() - start, ok)

    # -- introspection ---------------------------------------------------------------------------------------
    def stat(self) -> dict[str, Any]:
        """Byzerllm's stat JSON plus queue length, running requests, errors and latency percentiles."""
        out = table_stat(self.slots.table, self.spec.worker_concurrency, len(self.slots.waiters))
        out["alias"] = self.spec.alias
        out["backend"] = self.spec.backend.registry_key
        out["uptime_s"] = round(time.time() - self.created, 1)
        return out

    def get_spec(self) -> DeploySpec:
        """The spec this alias was deployed with."""
        return self.spec

    async def check_health(self) -> list[str | None]:
        """Per worker: None when healthy, else the error."""
        results = await asyncio.gather(*(w.check_health.remote() for w in self.workers), return_exceptions=True)
        return [None if r is None else (r.message if isinstance(r, ByzerLikeError) else translate(r).message)
                for r in results]


RouterActor = ray.remote(Router)
