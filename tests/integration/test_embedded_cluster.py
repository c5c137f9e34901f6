"""`auto` with no cluster starts an embedded head (dashboard on, token auth on); `cluster stop` stops only it."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, processes_mentioning

pytestmark = pytest.mark.slow


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "byzer_like.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)




def test_auto_starts_embedded_cluster_and_stop_removes_only_it(ray_cluster):
    tmp = tempfile.mkdtemp(prefix="blc", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    home = tempfile.mkdtemp(prefix="blh", dir="/tmp")  # a new user's HOME: no ~/.ray, no Ray token yet
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                             "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=home, RAY_TMPDIR=tmp, BYZER_LIKE_RAY_PORT=str(port), BYZER_LIKE_DASHBOARD_PORT=str(free_port()))
    assert cli("stat", "x", env=env).returncode == 1  # nothing running there yet: a clear error, no start
    deployed = cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "emb_echo", "--num_workers", "2",
                   env=env)
    try:
        assert deployed.returncode == 0, deployed.stderr
        token_file = Path(home, ".ray", "auth_token")
        assert f"Created Ray's authentication token at {token_file}" in deployed.stderr
        assert token_file.stat().st_mode & 0o077 == 0  # private to its owner
        token = token_file.read_text().strip()
        assert token and token not in deployed.stdout + deployed.stderr  # said where, never what
        assert "Started a local Ray cluster at" in deployed.stderr and f":{port}" in deployed.stderr
        assert "dashboard: http://127.0.0.1:" in deployed.stderr
        status = json.loads(cli("cluster", "status", "--json", env=env).stdout)
        assert status["address"].endswith(f":{port}") and status["deployments"] == ["emb_echo"]
        # Ray's own CLI lists our named actors on the token-authenticated cluster
        listing = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "list", "actors", "--format", "json",
                                  "--address", status["dashboard_url"]], capture_output=True, text=True,
                                 timeout=120, env={**env, "RAY_AUTH_MODE": "token"})
        names = {row.get("name") for row in json.loads(listing.stdout)} if listing.returncode == 0 else set()
        assert {"emb_echo", "emb_echo/worker-0", "emb_echo/worker-1"} <= names, listing.stderr[-1500:]
        chat = cli("chat", "emb_echo", "hello embedded", env=env)
        assert chat.returncode == 0 and chat.stdout.strip() == "hello embedded"
        assert processes_mentioning(tmp)
    finally:
        stopped = cli("cluster", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 30
    while processes_mentioning(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(tmp)
    # the session's own cluster is untouched
    import ray

    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 8.0
    after = cli("stat", "emb_echo", env=env)
    assert after.returncode == 1 and "no Ray cluster is running" in after.stderr


def test_existing_cluster_without_a_token_is_one_clear_line(ray_cluster):
    home = tempfile.mkdtemp(prefix="blh", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=home, RAY_ADDRESS=ray_cluster)
    start = time.monotonic()
    out = cli("list", env=env)
    assert out.returncode == 1 and time.monotonic() - start < 60
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "needs its authentication token" in err and f"{home}/.ray/auth_token" in err
    assert not Path(home, ".ray", "auth_token").exists()  # connecting never creates a token
