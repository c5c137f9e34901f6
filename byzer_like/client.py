"""The Python client: talk to a deployed alias by name. The CLI and the HTTP gateway use it too.

Example:
    >>> client = Client("smol_chat")  # doctest: +SKIP
    >>> client.chat("What is the capital of France?").text  # doctest: +SKIP
    'The capital of France is Paris.'
    >>> for delta in client.stream([{"role": "user", "content": "Hi"}], max_tokens=16):  # doctest: +SKIP
    ...     print(delta.text, end="")
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, AsyncIterator, NoReturn, Sequence

import ray
from pydantic import ValidationError

from byzer_like._ray import get_actor, translate
from byzer_like.cluster import connect
from byzer_like.errors import InvalidRequestError
from byzer_like.protocol import (
    ChatRequest,
    ChatResponse,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageRequest,
    ImageResponse,
    Message,
    SpeechRequest,
    SpeechResponse,
    TranscriptionRequest,
    TranscriptionResponse,
)
from byzer_like.spec import AdapterSpec
from byzer_like.stream_lease import WORKER_DIED, LeasedStream

Messages = str | Sequence[Message | dict[str, Any]]
Audio = bytes | str | os.PathLike[str]


def build_chat(messages: Messages, params: dict[str, Any]) -> ChatRequest:
    """A validated ``ChatRequest`` from a string or a message list plus sampling parameters.

    Raises:
        InvalidRequestError: naming the first bad field.
    """
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    return _validated(ChatRequest, {"messages": msgs, **params})


def _embedding_request(texts: str | Sequence[str]) -> EmbeddingRequest:
    return _validated(EmbeddingRequest, {"input": [texts] if isinstance(texts, str) else list(texts)})


def _transcription_request(audio: Audio, params: dict[str, Any]) -> TranscriptionRequest:
    """Bytes as given; a ``str``/path is a file to read (its name becomes the filename)."""
    if not isinstance(audio, bytes):
        path = Path(audio).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequestError(f"cannot read audio file '{path}': {exc.strerror}", param="file") from None
        params = {"filename": path.name, **params}
        audio = data
    return _validated(TranscriptionRequest, {"audio": audio, **params})


def _validated(model: type, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise InvalidRequestError(f"invalid '{name}': {err['msg']}", param=name) from None


class _Base:
    def __init__(self, alias: str, *, address: str | None = None, timeout: float | None = None) -> None:
        connect(address, start=False)
        self.alias = alias
        self.timeout = timeout
        self._router = get_actor(alias)


class Client(_Base):
    """Synchronous client for one alias.

    Args:
        alias: The deployment's name.
        address: Ray address (default: ``RAY_ADDRESS`` or the running local cluster).
        timeout: Seconds a request may take before ``RequestTimeoutError``; None waits as long as it takes.
    """

    def chat(self, messages: Messages, **params: Any) -> ChatResponse:
        """Send a chat and wait for the whole answer."""
        return self._get(self._router.chat.remote(build_chat(messages, params)))

    def stream(self, messages: Messages, **params: Any) -> ChunkStream:
        """Send a chat and iterate over the answer's chunks as they arrive (close it to cancel)."""
        return ChunkStream(LeasedStream(self._router, "chat_stream", build_chat(messages, params)), self.timeout)

    def complete(self, prompt: str, **params: Any) -> ChatResponse:
        """Complete a prompt and wait for the whole answer."""
        return self._get(self._router.complete.remote(_validated(CompletionRequest, {"prompt": prompt, **params})))

    def stream_complete(self, prompt: str, **params: Any) -> ChunkStream:
        """Complete a prompt, streaming."""
        req = _validated(CompletionRequest, {"prompt": prompt, **params})
        return ChunkStream(LeasedStream(self._router, "complete_stream", req), self.timeout)

    def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self.embed_response(texts).embeddings

    def embed_response(self, texts: str | Sequence[str]) -> EmbeddingResponse:
        """Vectors (in input order) plus token usage."""
        return self._get(self._router.embed.remote(_embedding_request(texts)))

    def transcribe(self, audio: Audio, **params: Any) -> TranscriptionResponse:
        """Speech to text: ``audio`` is the file's bytes or its path; params as ``TranscriptionRequest``."""
        return self._get(self._router.transcribe.remote(_transcription_request(audio, params)))

    def speech(self, text: str, **params: Any) -> SpeechResponse:
        """Text to speech (``voice``, ``response_format``, ``speed``); the answer holds the audio bytes."""
        return self._get(self._router.speech.remote(_validated(SpeechRequest, {"input": text, **params})))

    def generate_image(self, prompt: str, **params: Any) -> ImageResponse:
        """Generate images (``n``, ``size``, ``quality``, ``response_format``, ``style``)."""
        return self._get(self._router.generate_image.remote(_validated(ImageRequest, {"prompt": prompt, **params})))

    def stat(self) -> dict[str, Any]:
        """Byzerllm's stat JSON plus queue, running, errors and latency percentiles."""
        return self._get(self._router.stat.remote())

    def add_adapter(self, name: str, source: str, *, scale: float = 1.0) -> dict[str, Any]:
        """Load a LoRA adapter on every worker of the alias; then ``chat(..., adapter=name)`` uses it.

        Args:
            name: The adapter's name.
            source: PEFT folder, GGUF LoRA file, ``http(s)://``/``file://`` URL, or (SaaS) an upstream model name.
            scale: Strength the adapter is applied with.

        Returns:
            The adapter's ``stat`` entry.
        """
        adapter = _validated(AdapterSpec, {"name": name, "source": str(source), "scale": scale})
        return self._get(self._router.add_adapter.remote(adapter))

    def remove_adapter(self, name: str) -> None:
        """Unload adapter ``name`` once the requests using it have finished."""
        self._get(self._router.remove_adapter.remote(name))

    def adapters(self) -> list[dict[str, Any]]:
        """The alias's adapters: name, source, phase and request counts."""
        return self._get(self._router.list_adapters.remote())

    def _get(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=self.timeout)
        except BaseException as exc:
            if isinstance(exc, (ray.exceptions.GetTimeoutError, KeyboardInterrupt)):
                ray.cancel(ref)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise translate(exc) from None


class ChunkStream:
    """An iterator over a streamed answer; ``close()`` (or leaving a ``with`` block) cancels the rest.

    The router grants the stream a slot and the chunks come straight from the worker (``stream_lease``).

    Args:
        stream: The stream's lease steps.
        timeout: Seconds to wait for the slot, and then for each chunk.
    """

    def __init__(self, stream: LeasedStream, timeout: float | None) -> None:
        self._stream = stream
        self._timeout = timeout
        self._done = False

    def __iter__(self) -> ChunkStream:
        # NOTE: the stream is its own iterator: ``next(iter(stream))`` must not make a temporary generator whose
        # collection would cancel the stream behind the caller's back.
        return self

    def __next__(self) -> Chunk:
        if self._done:
            raise StopIteration
        s = self._stream
        while True:
            try:
                if s.gen is None:
                    s.start(ray.get(s.lease_ref, timeout=self._timeout))
                ref = next(s.gen)
                chunk = ray.get(ref, timeout=self._timeout)
            except StopIteration:
                self._done = True
                raise
            except WORKER_DIED as exc:
                if s.lease is None:  # NOTE: the router itself, not the worker
                    self._fail(exc)
                try:
                    s.retry(ray.get(s.died(exc), timeout=self._timeout), exc)
                except BaseException as err:  # noqa: BLE001 - shown as ours
                    self._fail(err)
                continue
            except BaseException as exc:  # noqa: BLE001 - shown as ours
                self._fail(exc)
            s.sent += 1
            return chunk

    def _fail(self, exc: BaseException) -> NoReturn:
        self.close()
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        raise translate(exc) from None

    def close(self) -> None:
        """Cancel the stream if it has not finished; this frees its worker slot."""
        if not self._done:
            self._done = True
            self._stream.cancel()

    def __del__(self) -> None:  # a stream dropped unread (``for ... break`` on a temporary) is cancelled too
        try:
            self.close()
        except Exception:  # noqa: BLE001 - Ray may already be shut down
            pass

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client for one alias (same methods as :class:`Client`, awaitable).

    Example:
        >>> client = AsyncClient("smol_chat")  # doctest: +SKIP
        >>> answer = await client.chat("hi")  # doctest: +SKIP
    """

    async def chat(self, messages: Messages, **params: Any) -> ChatResponse:
        """Send a chat and await the whole answer."""
        return await self._await(self._router.chat.remote(build_chat(messages, params)))

    async def stream(self, messages: Messages, **params: Any) -> AsyncIterator[Chunk]:
        """Send a chat and iterate over the answer's chunks; breaking out cancels the rest."""
        async for chunk in _iterate(LeasedStream(self._router, "chat_stream", build_chat(messages, params))):
            yield chunk

    async def complete(self, prompt: str, **params: Any) -> ChatResponse:
        """Complete a prompt and await the whole answer."""
        req = _validated(CompletionRequest, {"prompt": prompt, **params})
        return await self._await(self._router.complete.remote(req))

    async def stream_complete(self, prompt: str, **params: Any) -> AsyncIterator[Chunk]:
        """Complete a prompt, streaming."""
        req = _validated(CompletionRequest, {"prompt": prompt, **params})
        async for chunk in _iterate(LeasedStream(self._router, "complete_stream", req)):
            yield chunk

    async def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return (await self.embed_response(texts)).embeddings

    async def embed_response(self, texts: str | Sequence[str]) -> EmbeddingResponse:
        """Vectors (in input order) plus token usage."""
        return await self._await(self._router.embed.remote(_embedding_request(texts)))

    async def transcribe(self, audio: Audio, **params: Any) -> TranscriptionResponse:
        """Speech to text: ``audio`` is the file's bytes or its path."""
        return await self._await(self._router.transcribe.remote(_transcription_request(audio, params)))

    async def speech(self, text: str, **params: Any) -> SpeechResponse:
        """Text to speech; the answer holds the audio bytes."""
        return await self._await(self._router.speech.remote(_validated(SpeechRequest, {"input": text, **params})))

    async def generate_image(self, prompt: str, **params: Any) -> ImageResponse:
        """Generate images."""
        req = _validated(ImageRequest, {"prompt": prompt, **params})
        return await self._await(self._router.generate_image.remote(req))

    async def stat(self) -> dict[str, Any]:
        """Byzerllm's stat JSON plus extras."""
        return await self._await(self._router.stat.remote())

    async def adapters(self) -> list[dict[str, Any]]:
        """The alias's adapters: name, source, phase and request counts."""
        return await self._await(self._router.list_adapters.remote())

    async def _await(self, ref: Any) -> Any:
        try:
            return await asyncio.wait_for(ref, self.timeout) if self.timeout else await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except asyncio.TimeoutError:
            ray.cancel(ref)
            raise translate(ray.exceptions.GetTimeoutError()) from None
        except Exception as exc:
            raise translate(exc) from None


async def _iterate(s: LeasedStream) -> AsyncIterator[Chunk]:
    """The chunks of a leased stream, read from its worker; a worker that died before sending anything is retried."""
    done = False
    try:
        while True:
            lease = await s.lease_ref
            try:
                async for ref in s.start(lease):
                    chunk = await ref
                    s.sent += 1
                    yield chunk
                done = True
                return
            except WORKER_DIED as exc:
                s.retry(await s.died(exc), exc)
    except Exception as exc:
        raise translate(exc) from None
    finally:
        if not done:
            s.cancel()
