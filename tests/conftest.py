"""Shared fixtures: one real local Ray cluster per test session, and deploy-then-undeploy helpers.

The cluster is started by this pytest process (``address="local"``) and stopped by it at the end, so tests stop
exactly the Ray processes they started. ``RAY_ADDRESS`` points CLI subprocesses and clients at it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder: integration and e2e tests need the Ray cluster."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster for the whole session; yields its GCS address."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    if not os.environ.get("BYZER_LIKE_CACHE"):  # NOTE: workers download and convert into this session's cache
        sys.path.insert(0, str(ROOT / "tests" / "integration"))
        from _engine_models import engine_cache

        os.environ["BYZER_LIKE_CACHE"] = str(engine_cache())
    # NOTE: the dashboard serves the State API (`ray list actors`); a free port lets sessions run side by side.
    ray.init(address="local", namespace="byzer_like", num_cpus=8, include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=free_port(), logging_level=logging.ERROR,
             log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture()
def deployed(ray_cluster: str) -> Iterator[Any]:
    """``deployed(spec)`` deploys and returns the resolved spec; everything is undeployed after the test."""
    from byzer_like.pool import deploy, list_aliases, undeploy

    aliases: list[str] = []

    def _deploy(spec: Any, **kwargs: Any) -> Any:
        aliases.append(spec.alias)
        return deploy(spec, **kwargs)

    yield _deploy
    for alias in aliases:
        if alias in list_aliases():
            with contextlib.suppress(Exception):
                undeploy(alias, force=True)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The bundled SmolLM2 GGUF."""
    from byzer_like.models import bundled_smollm2_gguf

    return str(bundled_smollm2_gguf())


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(proc.info["cmdline"] or []):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@contextlib.contextmanager
def gateway_serving(*serve_args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``byzer-like serve --port <free>`` on the session cluster; yields its URL and stops it afterwards."""
    import time

    import httpx

    port = free_port()
    started = run_cli("serve", "--port", str(port), *serve_args, env=env)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway did not become ready"
        time.sleep(0.5)
    try:
        yield url
    finally:
        run_cli("serve", "--stop")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``byzer-like ARGS`` in a subprocess (the real console entry point) against the session cluster."""
    cmd = [sys.executable, "-m", "byzer_like.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=ROOT)


@pytest.fixture()
def cli(ray_cluster: str) -> Any:
    """``cli("deploy", ...)`` runs the real CLI in a subprocess against the session cluster."""
    return run_cli
