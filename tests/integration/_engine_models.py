"""The prepared model cache shared by the engine tests of one session (built from the packaged models on first use).

Nothing a previous run left is trusted: unless ``$BYZER_LIKE_CACHE`` names a cache on purpose, each test session
prepares its models into a new folder of its own (SmolLM2's HF folder takes ~20 s) and removes it at exit.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import psutil


@functools.cache
def engine_cache() -> Path:
    """``$BYZER_LIKE_CACHE`` if set, else a new folder for this session (removed when the session ends)."""
    if os.environ.get("BYZER_LIKE_CACHE"):
        return Path(os.environ["BYZER_LIKE_CACHE"])
    folder = Path(tempfile.mkdtemp(prefix="byzer_like_test_cache_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


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
