"""The worker actor: hosts one ``Backend`` and runs the requests the router sends it.

Every error leaving a worker is one of ours (``BackendError`` for anything unexpected), so it pickles and keeps
its meaning across the actor boundary.

Example:
    >>> worker = ray.remote(Worker).remote(spec, 0)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from byzer_like._ray import NAMESPACE
from byzer_like.backends.base import Backend
from byzer_like.backends.registry import resolve_backend
from byzer_like.errors import BackendError, ByzerLikeError
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
    coalesce,
    collect,
)
from byzer_like.spec import AdapterSpec, DeploySpec
from byzer_like.stream_lease import Reporter, StreamEnd

logger = logging.getLogger(__name__)
LEASE_CLOSE_WAIT_S = 5.0


class Worker:
    """One engine instance of an alias.

    Args:
        spec: The resolved deployment spec.
        index: This worker's index in the pool.
        backend_cls: Use this backend class instead of the registry's (tests, custom engines).
    """

    def __init__(self, spec: DeploySpec, index: int, backend_cls: type[Backend] | None = None) -> None:
        self.backend_cls = backend_cls or resolve_backend(spec.backend.registry_key)
        self.backend = self.backend_cls(spec, index)
        self.index = index
        self.state: dict[str, Any] = {"phase": "queued"}
        self.leases: set[int] = set()
        self._router: Any = None

    async def start(self) -> None:
        """Fetch the model when it is a URL (here, on this worker's node), then load the engine."""
        spec = self.backend.spec
        if spec.downloads_model:
            self.state = {"phase": "downloading", "done": 0, "total": None}
            local = await _guard(asyncio.to_thread(self._download, spec))
            # NOTE: the backend checks what arrived as it checks a local path at deploy time.
            self.backend = self.backend_cls(self.backend_cls.prepare_spec(spec.with_model_path(local)), self.index)
        self.state = {"phase": "loading"}
        await _guard(self.backend.start())
        self.state = {"phase": "ready"}

    def _download(self, spec: DeploySpec) -> str:
        from byzer_like.prepare import cache_dir
        from byzer_like.sources import fetch

        def progress(done: int, total: int | None) -> None:
            self.state = {"phase": "downloading", "done": done, "total": total}

        return str(fetch(spec.backend.model_path or "", cache_dir(), sha256=spec.backend.model_sha256,
                         progress=progress))

    def progress(self) -> dict[str, Any]:
        """Where this worker's start is: queued, downloading (bytes done/total), loading or ready."""
        return self.state

    async def chat(self, req: ChatRequest) -> ChatResponse:
        """Answer a chat request in one piece."""
        return await _guard(self.backend.chat_once(req))

    async def chat_stream(self, req: ChatRequest, lease: int | None = None) -> AsyncIterator[Chunk]:
        """Stream the answer to a chat request (``lease``: read by the caller itself; see ``stream_lease``)."""
        async for chunk in self._paced(self.backend.chat(req), lease):
            yield chunk

    async def complete(self, req: CompletionRequest) -> ChatResponse:
        """Complete a prompt in one piece."""
        return await _guard(collect(self.backend.complete(req)))

    async def complete_stream(self, req: CompletionRequest, lease: int | None = None) -> AsyncIterator[Chunk]:
        """Stream the completion of a prompt."""
        async for chunk in self._paced(self.backend.complete(req), lease):
            yield chunk

    def _paced(self, stream: AsyncIterator[Chunk], lease: int | None) -> AsyncIterator[Chunk]:
        guarded = _guard_stream(stream)
        interval_ms = self.backend.spec.stream_interval_ms or 0
        paced = coalesce(guarded, interval_ms / 1000) if interval_ms > 0 else guarded
        return paced if lease is None else self._reported(paced, lease)

    async def _reported(self, stream: AsyncIterator[Chunk], lease: int) -> AsyncIterator[Chunk]:
        """A leased stream: hand its slot back to the router when it ends, however it ends."""
        report, outcome, error = Reporter(lease), "error", None
        self.leases.add(lease)
        try:
            async for chunk in stream:
                report.saw(chunk)
                yield chunk
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.leases.discard(lease)
            await self._close_lease(lease, report.end(outcome, error), wait=outcome != "cancelled")

    async def _close_lease(self, lease: int, end: StreamEnd, wait: bool) -> None:
        try:
            if self._router is None:
                import ray

                self._router = ray.get_actor(self.backend.spec.alias, namespace=NAMESPACE)
            ref = self._router.close_stream.remote(lease, end)
            if wait:  # NOTE: the caller sees the end of the stream only once its slot is back
                await asyncio.wait_for(ref, LEASE_CLOSE_WAIT_S)
        except Exception:  # noqa: BLE001 - a router restarting forgets its leases anyway
            logger.warning("could not hand lease %s back to the router of %s", lease, self.backend.spec.alias,
                           exc_info=True)

    def active_leases(self) -> list[int]:
        """Leases whose streams run here now (the router takes back granted leases that never started)."""
        return sorted(self.leases)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts."""
        return await _guard(self.backend.embed(req))

    async def transcribe(self, req: TranscriptionRequest) -> TranscriptionResponse:
        """Speech to text."""
        return await _guard(self.backend.transcribe(req))

    async def speech(self, req: SpeechRequest) -> SpeechResponse:
        """Text to speech."""
        return await _guard(self.backend.speech(req))

    async def generate_image(self, req: ImageRequest) -> ImageResponse:
        """Image generation."""
        return await _guard(self.backend.generate_image(req))

    async def add_adapter(self, adapter: AdapterSpec) -> dict[str, Any]:
        """Load a LoRA adapter (fetched on this worker's node when its source is a URL)."""
        return await _guard(self.backend.add_adapter(adapter))

    async def remove_adapter(self, name: str) -> None:
        """Unload a LoRA adapter."""
        await _guard(self.backend.remove_adapter(name))

    async def check_health(self) -> None:
        """Raise if the engine is unusable."""
        await _guard(self.backend.check_health())

    async def shutdown(self) -> None:
        """Release the engine before the actor is killed."""
        await _guard(self.backend.shutdown())

    def describe(self) -> dict[str, Any]:
        """Facts about the engine for ``stat``."""
        return self.backend.describe()

    def where(self) -> dict[str, Any]:
        """This worker's process and Ray node (for ``stat``)."""
        import os

        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    async def watch(self) -> None:
        """Never returns: the router keeps one call open per worker, which fails the moment the worker dies."""
        await asyncio.Event().wait()


async def _guard(awaitable: Any) -> Any:
    try:
        return await awaitable
    except ByzerLikeError:
        raise
    except Exception as exc:
        logger.exception("backend failed")
        raise BackendError(f"{type(exc).__name__}: {exc}") from None


async def _guard_stream(stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        async for chunk in stream:
            yield chunk
    except ByzerLikeError:
        raise
    except Exception as exc:
        logger.exception("backend stream failed")
        raise BackendError(f"{type(exc).__name__}: {exc}") from None
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
