"""Retries for SaaS calls: exponential backoff with full jitter, honouring Retry-After, within a time budget.

A stream is retried only before its first chunk reached the caller; after that an error ends the stream with the
error (never a short answer that looks complete).

Example:
    >>> policy = RetryPolicy(max_retries=3, base_s=0.5, max_s=20, budget_s=60)
    >>> policy.delay(0, UpstreamError("boom", upstream_status=503), elapsed=0.0) <= 0.5
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from byzer_like.errors import BackendUnavailableError, ByzerLikeError, RateLimitError, RequestTimeoutError, \
    UpstreamError
from byzer_like.protocol import Chunk

logger = logging.getLogger(__name__)
T = TypeVar("T")
Translate = Callable[[BaseException], ByzerLikeError]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Args:
        max_retries: Retries after the first attempt (0 = never retry).
        base_s: First backoff ceiling; doubles per attempt.
        max_s: Largest single backoff.
        budget_s: Total seconds (attempts and waits) after which no retry starts.
    """

    max_retries: int = 3
    base_s: float = 0.5
    max_s: float = 20.0
    budget_s: float = 60.0

    def delay(self, attempt: int, err: ByzerLikeError, elapsed: float) -> float | None:
        """Seconds to wait before retry ``attempt + 1``, or None when ``err`` must be raised now."""
        if attempt >= self.max_retries or not is_retryable(err):
            return None
        wait = random.uniform(0, min(self.max_s, self.base_s * 2 ** attempt))
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, float(retry_after))
        return wait if elapsed + wait <= self.budget_s else None


def is_retryable(err: ByzerLikeError) -> bool:
    """429s, 5xx and connection failures, and timeouts are worth another try; 4xx are not."""
    if isinstance(err, (RateLimitError, RequestTimeoutError, BackendUnavailableError)):
        return True
    if type(err) is UpstreamError:
        return err.upstream_status is None or err.upstream_status >= 500
    return False


async def call_with_retries(make: Callable[[], Awaitable[T]], policy: RetryPolicy, translate: Translate,
                            on_retry: Callable[[ByzerLikeError], None] | None = None) -> T:
    """Await ``make()``, retrying per ``policy``; any failure leaves as our typed error.

    Raises:
        ByzerLikeError: the last attempt's error, translated.
    """
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return await make()
        except Exception as exc:  # noqa: BLE001 - translated by type right here
            err = translate(exc)
        wait = policy.delay(attempt, err, time.monotonic() - start)
        if wait is None:
            raise err
        _note_retry(err, attempt, wait, on_retry)
        await asyncio.sleep(wait)
        attempt += 1


async def stream_with_retries(make: Callable[[], AsyncIterator[Chunk]], policy: RetryPolicy, translate: Translate,
                              on_retry: Callable[[ByzerLikeError], None] | None = None) -> AsyncIterator[Chunk]:
    """Yield ``make()``'s chunks, retrying per ``policy`` while nothing has been yielded yet.

    Raises:
        ByzerLikeError: the error that ended the stream, translated.
    """
    start, attempt = time.monotonic(), 0
    while True:
        started = False
        try:
            async with contextlib.aclosing(make()) as stream:
                async for chunk in stream:
                    started = True
                    yield chunk
            return
        except Exception as exc:  # noqa: BLE001 - translated by type right here
            err = translate(exc)
        if started:
            raise type(err)(f"{err.message} (the stream broke mid-way; the answer so far is incomplete)",
                            **err._kwargs()) from None
        wait = policy.delay(attempt, err, time.monotonic() - start)
        if wait is None:
            raise err
        _note_retry(err, attempt, wait, on_retry)
        await asyncio.sleep(wait)
        attempt += 1


def _note_retry(err: ByzerLikeError, attempt: int, wait: float,
                on_retry: Callable[[ByzerLikeError], None] | None) -> None:
    logger.warning("upstream failed (%s: %s); retry %d in %.2fs", type(err).__name__, err.message, attempt + 1, wait)
    if on_retry is not None:
        on_retry(err)
