"""The shared fake-upstream machinery: an aiohttp app in a thread, key checks, recorded requests, scripted faults."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One scripted misbehaviour, used by the next matching request.

    Args:
        status: Answer with this HTTP status (and ``body``/``headers``) instead of the real answer.
        delay_s: Sleep this long before answering (to trigger client timeouts).
        cut_after: In a stream, send this many content events, then drop the connection.
        headers: Extra response headers (e.g. ``Retry-After``).
        body: The JSON error body for ``status``; a provider-shaped default when None.
    """

    status: int | None = None
    delay_s: float = 0.0
    cut_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass
class Received:
    """A request the upstream received.

    Args:
        at: ``time.monotonic()`` when it arrived (the server runs in the test's process: the clocks compare).
        status: The error status a scripted fault answered it with; None for a real answer.
    """

    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    status: int | None = None


class UpstreamServer:
    """Base of the fake providers: subclasses add routes and shape errors like their provider.

    Args:
        api_key: The one key the server accepts.
        port: 0 picks a free port.
    """

    def __init__(self, api_key: str = "sk-test-secret-123456", port: int = 0) -> None:
        self.api_key = api_key
        self.port = port
        self.faults: deque[Fault] = deque()
        self.received: list[Received] = []
        self.hits = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- subclass hooks ------------------------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) triples."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the right key (default: ``Authorization: Bearer``)."""
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def error_response(self, status: int, message: str, headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> web.Response:
        """An error in the provider's JSON shape (default: OpenAI's)."""
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        payload = body or {"error": {"message": message, "type": kind, "param": None,
                                     "code": "invalid_api_key" if status == 401 else None}}
        return web.json_response(payload, status=status, headers=headers)

    # -- per-request helpers -------------------------------------------------------------------------------
    async def admit(self, request: web.Request) -> tuple[web.Response | None, Fault | None, Any]:
        """Record the request, check the key, play the next fault. Returns (early response, fault, body)."""
        self.hits += 1
        arrived = time.monotonic()
        raw = await request.read()
        body = json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw
        record = Received(request.path, dict(request.headers), body, at=arrived)
        self.received.append(record)
        if not self.authorized(request):
            record.status = 401
            return self.error_response(401, "Incorrect API key provided: the key is not valid."), None, body
        fault = self.faults.popleft() if self.faults else None
        if fault and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault and fault.status:
            record.status = fault.status
            message = "Rate limit reached; please retry" if fault.status == 429 else "upstream failure"
            return self.error_response(fault.status, message, fault.headers, fault.body), fault, body
        return None, fault, body

    def retry_gap(self, status: int = 429) -> float:
        """Seconds from the arrival of the last request answered with ``status`` to the next one on its path
        (the client's retry of it)."""
        rows = list(self.received)
        last = max(i for i, row in enumerate(rows) if row.status == status)
        retry = next(row for row in rows[last + 1:] if row.path == rows[last].path)
        return retry.at - rows[last].at

    def add_fault(self, **kwargs: Any) -> None:
        """Script a fault for the next request (see :class:`Fault`)."""
        self.faults.append(Fault(**kwargs))

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UpstreamServer:
        """Serve in a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self).__name__)
        self._thread.start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]
        self._loop = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cut(response: web.StreamResponse, request: web.Request) -> None:
    """Drop the connection mid-body (no terminating chunk), as a proxy or network failure would."""
    if request.transport is not None:
        request.transport.abort()


def words_of(text: str) -> list[str]:
    """Split a reply into streamed pieces: first word bare, the rest with a leading space."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: whitespace words."""
    return len(text.split())


def tool_arguments(name: str, text: str) -> str:
    """The arguments a fake upstream calls ``name`` with: deterministic JSON naming the tool and the last text."""
    return json.dumps({"tool": name, "echo": text, "n": len(text)})


def pieces(text: str, count: int = 3) -> list[str]:
    """``text`` cut into ``count`` consecutive fragments (streamed tool arguments)."""
    size = max(1, -(-len(text) // count))
    return [text[i:i + size] for i in range(0, len(text), size)]
