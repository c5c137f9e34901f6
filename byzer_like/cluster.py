"""Reaching a Ray cluster: an explicit address, ``RAY_ADDRESS``, a running local cluster, or an embedded head node.

Ray's token authentication stays on: Ray keeps the token in ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN`` /
``RAY_AUTH_TOKEN_PATH``) and we set ``RAY_AUTH_MODE=token`` for the Ray processes and CLIs we start, so no command needs
the user to set anything. ``ray start --head`` refuses to start without a token, so before starting an embedded head
we create one the way Ray does (once, announced with its path); connecting to an existing cluster never creates one.

Example:
    >>> info = connect("auto")  # doctest: +SKIP
    >>> info.dashboard_url  # doctest: +SKIP
    'http://127.0.0.1:8265'
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ray

from byzer_like._ray import NAMESPACE
from byzer_like.errors import ClusterError
from byzer_like.settings import ClusterSettings

logger = logging.getLogger(__name__)
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class ClusterInfo:
    """Where we are connected."""

    address: str
    dashboard_url: str | None
    started_here: bool = False


def _quiet_ray_logs() -> None:
    # NOTE: Ray warns on every connection that token auth is on; that is the intended state, not news.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)


def _enable_token_auth_if_available() -> None:
    """Use Ray's token when one exists and the user did not choose an auth mode.

    Ray does this itself only for ``auto``/local clusters; a ``host:port`` address (ours, or ``RAY_ADDRESS``) would
    otherwise connect without the token and be refused by a token-authenticated cluster.
    """
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available  # noqa: PLC0415
    except ImportError:  # an older Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _init(address: str) -> ClusterInfo:
    _quiet_ray_logs()
    if _token_auth_on() and not _token_available():
        raise ClusterError(f"the Ray cluster at '{address}' needs its authentication token and this machine has "
                           f"none; copy the cluster's token (`ray get-auth-token` on its head node) to "
                           f"{auth_token_path()} or set RAY_AUTH_TOKEN_PATH to a file holding it "
                           "(RAY_AUTH_MODE=disabled if that cluster runs without authentication)")
    _enable_token_auth_if_available()
    try:
        ctx = ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, *_auth_errors()) as exc:
        hint = (f"; if it uses token authentication, check that {auth_token_path()} (or RAY_AUTH_TOKEN_PATH) holds "
                "that cluster's token (`ray get-auth-token` on its head node)") if _token_auth_on() else ""
        raise ClusterError(f"cannot connect to Ray at '{address}': {str(exc).splitlines()[0]}{hint}") from None
    url = ctx.dashboard_url or None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return ClusterInfo(address=ray.get_runtime_context().gcs_address, dashboard_url=url)


def connect(address: str | None = "auto", *, start: bool = True, say: Callable[[str], None] | None = None
            ) -> ClusterInfo:
    """Connect this process to a Ray cluster (once; later calls return the same cluster).

    Args:
        address: ``auto`` (``RAY_ADDRESS``, else a running local cluster, else start one), or ``host:port``.
        start: Start an embedded local head node when ``auto`` finds no cluster.
        say: Where to announce a newly started cluster (the CLI prints it).

    Raises:
        ClusterError: when no cluster can be reached (and none may be started).
    """
    if ray.is_initialized():
        return current()
    address = address or "auto"
    try:
        explicit = address if address != "auto" else os.environ.get("RAY_ADDRESS")
        if explicit:
            if not _reachable(explicit):
                raise ClusterError(f"no Ray cluster answers at '{explicit}'; check the address (or RAY_ADDRESS)")
            return _init(explicit)
        recorded = read_recorded_address()
        if recorded and _reachable(recorded):
            return _init(recorded)
        if not start:
            raise ClusterError("no Ray cluster is running; `byzer-like deploy` starts one, or set RAY_ADDRESS "
                               "/ --ray_address to an existing cluster")
        if (created := ensure_auth_token()) and say:
            say(f"Created Ray's authentication token at {created} "
                "(the embedded cluster requires it; keep it private).")
        start_local_head()
        info = _init("auto")
        if say:
            say(f"Started a local Ray cluster at {info.address} (dashboard: {info.dashboard_url}); "
                "`byzer-like cluster stop` stops it.")
        return ClusterInfo(info.address, info.dashboard_url, started_here=True)
    except ClusterError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to Ray at '{address}': {str(exc).splitlines()[0]}") from None


def auth_token_path() -> Path:
    """Where Ray reads its token from: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def _token_auth_on() -> bool:
    return os.environ.get("RAY_AUTH_MODE", "token").lower() == "token"


def ensure_auth_token() -> Path | None:
    """Create Ray's authentication token when token auth is on and none exists yet, as Ray's own CLI does.

    Returns:
        The token file's path when one was created now, else None (a token existed, or auth is off).
    """
    path = auth_token_path()
    if not _token_auth_on() or _token_available():
        return None
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):  # Ray generates only into ~/.ray/auth_token
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH names {path}, which holds no token; put the cluster's token there "
                           "or unset RAY_AUTH_TOKEN_PATH to let byzer-like create one in ~/.ray/auth_token")
    # NOTE: `ray get-auth-token --generate` writes the token to this same path; we run it quietly (it prints the
    # token itself, which must never reach our output).
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"]
    proc = subprocess.run(cmd, env=ray_cli_env(), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not path.is_file():
        raise ClusterError(f"could not create Ray's authentication token at {path}; run `ray get-auth-token "
                           "--generate` yourself, or set RAY_AUTH_TOKEN_PATH to a writable file")
    path.chmod(0o600)
    return path


def _auth_errors() -> tuple[type[BaseException], ...]:
    errors = getattr(ray.exceptions, "AuthenticationError", None)
    return (errors,) if isinstance(errors, type) else ()


def _token_available() -> bool:
    path = auth_token_path()
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or (path.is_file() and bool(path.read_text().strip()))


def read_recorded_address() -> str | None:
    """The address Ray recorded for this machine's latest local cluster (``/tmp/ray/ray_current_cluster``)."""
    from ray._private.utils import read_ray_address  # noqa: PLC0415

    return read_ray_address()


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something listens at ``host:port`` (Ray itself would retry a dead address for minutes)."""
    if "://" in address:  # ray:// client addresses: let Ray judge
        return True
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def current() -> ClusterInfo:
    """The cluster this process is connected to."""
    ctx = ray.get_runtime_context()
    url = ray._private.worker.get_dashboard_url() if ray.is_initialized() else None  # noqa: SLF001
    return ClusterInfo(address=ctx.gcs_address, dashboard_url=f"http://{url}" if url else None)


def ray_cli_env() -> dict[str, str]:
    """Environment for Ray processes and CLIs we start: token auth on (Ray's CLIs need it said explicitly)."""
    return {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"), "RAY_USAGE_STATS_ENABLED": "0"}


def start_local_head() -> None:
    """Start an embedded single-node Ray head (dashboard on 127.0.0.1) that outlives this process.

    Ray records it as this machine's current cluster, so ``address="auto"`` finds it from then on.
    """
    settings = ClusterSettings()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--disable-usage-stats",
           f"--port={settings.ray_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={settings.dashboard_port}"]
    if settings.ray_num_cpus:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    proc = subprocess.run(cmd, env=ray_cli_env(), capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ClusterError("could not start a local Ray cluster: " + " | ".join(tail))


def status() -> dict:
    """Address, dashboard URL, nodes (with each one's Prometheus metrics address) and deployments."""
    from byzer_like.pool import list_aliases

    info = current()
    nodes = [{"address": n["NodeManagerAddress"], "alive": n["Alive"],
              "metrics_url": f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
              if n.get("MetricsExportPort") else None,
              "resources": {k: v for k, v in n["Resources"].items() if not k.startswith("node:")}}
             for n in ray.nodes()]
    return {"address": info.address, "dashboard_url": info.dashboard_url, "nodes": nodes,
            "deployments": list_aliases()}


def stop_connected_cluster() -> int:
    """Stop the Ray processes of the cluster this process is connected to (on this machine), and only those.

    Returns:
        How many processes were stopped.
    """
    import psutil
    import ray._private.worker as ray_worker  # noqa: PLC0415

    node = ray_worker._global_node  # noqa: SLF001
    marks = [ray.get_runtime_context().gcs_address]
    if node is not None:
        marks.append(node.get_session_dir_path())
    ray.shutdown()
    roots = [p for p in psutil.process_iter(["cmdline"]) if _matches(p, marks)]
    procs = {p.pid: p for root in roots for p in [root, *_children(root)]}
    procs.pop(os.getpid(), None)
    for proc in procs.values():
        _signal(proc.terminate)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=STOP_GRACE_S)
    for proc in alive:
        _signal(proc.kill)
    if read_recorded_address() == marks[0]:
        from ray._common.utils import reset_ray_address  # noqa: PLC0415

        reset_ray_address()
    time.sleep(0.2)
    return len(procs)


def _matches(proc: object, marks: list[str]) -> bool:
    cmdline = " ".join(getattr(proc, "info", {}).get("cmdline") or [])
    return any(mark and mark in cmdline for mark in marks)


def _children(proc: object) -> list:
    try:
        return proc.children(recursive=True)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the process may be gone already
        return []


def _signal(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - gone already, or not ours to touch
        pass
