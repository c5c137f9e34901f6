"""Streams read straight from the worker: the router grants a slot (a lease), the caller reads the worker's stream.

A stream relayed through the router crosses two actor hops per chunk; read from the worker it crosses one. The router
still owns the slots, the LRU choice, the queue and the adapter counts: ``Router.open_stream`` waits for a slot like
any request and answers a :class:`Lease`; the caller starts the stream on the lease's worker with the lease id; the
worker hands the slot back when the stream ends (``Router.close_stream`` with a :class:`StreamEnd`), and when it ends
normally it does so before the caller sees the end, so what follows (``stat``) sees the slot free. The caller also
closes the lease when it cancels (the worker may never have started), and when the worker died under it (the router
takes the worker out and says whether the stream may be retried: only while nothing was sent). A lease whose stream
never started on its worker (a caller gone between the grant and the call) is taken back by the router's control
loop after ``UNCLAIMED_S``.

Example:
    >>> stream = LeasedStream(router, "chat_stream", req)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
from ray import exceptions as rex

from byzer_like._ray import translate
from byzer_like.errors import BackendUnavailableError, ByzerLikeError
from byzer_like.protocol import Usage

WORKER_DIED = (rex.RayActorError, rex.ActorUnavailableError)  # the worker itself is gone (not an engine error)
UNCLAIMED_S = 15.0  # a granted lease whose stream has not started on its worker after this long is taken back


@dataclass(frozen=True)
class Lease:
    """A slot granted for one stream: read ``worker``'s stream with ``id``."""

    id: int
    worker: Any


@dataclass(frozen=True)
class StreamEnd:
    """How a leased stream ended, as its worker (or caller) tells the router."""

    outcome: str  # ok | error | cancelled | died
    sent: int = 0
    usage: Usage | None = None
    first_s: float | None = None  # seconds from the stream's start on the worker to its first chunk
    error_type: str | None = None
    attempt: int = 0
    reason: str | None = None  # died: what the caller saw


class LeasedStream:
    """The caller's side of one leased stream (the same steps for the sync and async clients).

    Args:
        router: The alias's router handle.
        method: The worker's stream method (``chat_stream`` or ``complete_stream``).
        req: The request; its ``adapter`` is counted by the router while the stream runs.
    """

    def __init__(self, router: Any, method: str, req: Any) -> None:
        self.router, self.method, self.req = router, method, req
        self.lease: Lease | None = None
        self.gen: Any = None
        self.sent = 0
        self.attempt = 0
        self.lease_ref = self.ask()

    def ask(self) -> Any:
        """Ask the router for a slot (an ObjectRef of a :class:`Lease`)."""
        self.lease, self.gen = None, None
        return self.router.open_stream.remote(getattr(self.req, "adapter", None))

    def start(self, lease: Lease) -> Any:
        """Start the stream on the leased worker; returns its ObjectRef generator."""
        self.lease = lease
        self.gen = getattr(lease.worker, self.method).remote(self.req, lease.id)
        return self.gen

    def died(self, exc: BaseException) -> Any:
        """The worker died under the stream: tell the router (an ObjectRef of "retry?")."""
        assert self.lease is not None
        end = StreamEnd("died", sent=self.sent, attempt=self.attempt, reason=translate(exc).message)
        return self.router.close_stream.remote(self.lease.id, end)

    def retry(self, allowed: bool, exc: BaseException) -> Any:
        """After :meth:`died`: a new lease ref when the router allows a retry; else raise the error to show."""
        if not allowed:
            if self.sent:
                raise BackendUnavailableError(
                    f"the worker serving this stream died after {self.sent} chunk(s) were sent; the answer is "
                    "incomplete, retry the request") from None
            raise translate(exc) from None
        self.attempt += 1
        self.lease_ref = self.ask()
        return self.lease_ref

    def cancel(self) -> None:
        """The caller stopped early: cancel the stream and hand the slot back."""
        if self.gen is not None:
            ray.cancel(self.gen)
        if self.lease is not None:
            self.router.close_stream.remote(self.lease.id, StreamEnd("cancelled", sent=self.sent,
                                                                     attempt=self.attempt))
        else:  # NOTE: a lease granted while this cancel travels is taken back as unclaimed
            ray.cancel(self.lease_ref)


class Reporter:
    """The worker's side: watches a leased stream and hands its slot back to the router when it ends."""

    def __init__(self, lease: int) -> None:
        self.lease = lease
        self.start = time.perf_counter()
        self.sent = 0
        self.first_s: float | None = None
        self.usage: Usage | None = None

    def saw(self, chunk: Any) -> None:
        """Count one chunk on its way out."""
        if not self.sent:
            self.first_s = time.perf_counter() - self.start
        self.sent += 1
        if chunk.usage is not None:
            self.usage = chunk.usage

    def end(self, outcome: str, exc: BaseException | None = None) -> StreamEnd:
        """The report for the router."""
        error_type = type(exc).__name__ if isinstance(exc, ByzerLikeError) else None
        if exc is not None and error_type is None and outcome == "error":
            error_type = "BackendError"
        return StreamEnd(outcome, sent=self.sent, usage=self.usage, first_s=self.first_s, error_type=error_type)
