"""Server-sent events: peek before the 200, one ``data: [DONE]``, errors after the 200 as an error event.

A client that goes away cancels the response task; the ``finally`` here closes the chunk stream, which cancels
the Ray generator and frees the worker slot.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from byzer_like.gateway.errors import error_payload, log_error, to_error

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def peek(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Await the first item now (so early failures get a real HTTP status), then yield everything.

    Raises:
        Exception: whatever the stream raised before its first item.
    """
    iterator = stream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return _empty()
    except BaseException:
        await _close(iterator)
        raise
    return _chain(first, iterator)


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await _close(rest)


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def events(items: AsyncIterator[Any], render: Callable[[Any], list[dict[str, Any]]], *, request_id: str | None,
                 done: bool = True, error_extra: dict[str, Any] | None = None) -> AsyncIterator[str]:
    """SSE lines for ``items``: ``render`` turns each item into zero or more JSON events.

    Args:
        items: The chunk stream (already peeked).
        render: Item -> events to send.
        request_id: For the error event and the log.
        done: End with exactly one ``data: [DONE]`` (OpenAI); TGI streams end without it.
        error_extra: Keys added beside ``error`` in an error event (TGI's ``error_type``).

    Yields:
        ``data: ...`` lines.
    """
    try:
        async for item in items:
            for event in render(item):
                yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
    except Exception as exc:  # noqa: BLE001 - after the 200 the only way to report is an error event
        err = to_error(exc)
        log_error(err, exc, request_id)
        yield f"data: {json.dumps({**error_payload(err, request_id), **(error_extra or {})})}\n\n"
    finally:
        await _close(items)
    if done:
        yield DONE


def sse_response(lines: AsyncIterator[str], request_id: str | None) -> StreamingResponse:
    """A ``text/event-stream`` response."""
    headers = {**SSE_HEADERS, **({"x-request-id": request_id} if request_id else {})}
    return StreamingResponse(lines, media_type="text/event-stream", headers=headers)
