"""The prepared model cache shared by the engine tests (built once per machine; ``prepare`` is idempotent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psutil


def engine_cache() -> Path:
    """``$BYZER_LIKE_CACHE`` if set, else one fixed folder under the temp dir (reused across sessions)."""
    return Path(os.environ.get("BYZER_LIKE_CACHE") or Path(tempfile.gettempdir()) / "byzer_like_test_cache")


def prepared(name: str) -> str:
    """Path of the prepared model ``name`` (built on first use)."""
    from byzer_like.prepare import prepare_model

    return str(prepare_model(name, cache=engine_cache()))


def alive(pids: list[int]) -> list[int]:
    """The pids that still run (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out
