"""The real ``byzer-like`` CLI in subprocesses against the session cluster: byzerllm's command lines, exit codes."""

import json
import os

import pytest

from direct_engines import QUESTION, llama_chat

SEED_DEPLOY = ("deploy --pretrained_model_type custom/auto --infer_backend llama_cpp --model_path {path} "
               "--cpus_per_worker 1 --gpus_per_worker 0 --num_workers 2 --model {alias}")


def one_line_error(proc):
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, proc.stderr
    return err


def test_seed_command_line_deploy_stat_chat_undeploy(cli, smollm2_path):
    alias = "smol_cli"
    proc = cli(*SEED_DEPLOY.format(path=smollm2_path, alias=alias).split())
    assert proc.returncode == 0, proc.stderr
    assert f"Deployed '{alias}' (llama_cpp): 2 workers" in proc.stdout
    assert "Failed to look up actor" not in proc.stdout + proc.stderr
    try:
        # the deploying process has exited: the pool survives it
        # the answer is llama.cpp's own: what llama-cpp-python answers directly here, streamed or whole
        direct = llama_chat(smollm2_path, QUESTION, max_tokens=48)
        chat = cli("chat", alias, QUESTION, "--temperature", "0", "--max-tokens", "48")
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout == direct.text + "\n"
        query = cli("query", "--model", alias, "--query", QUESTION, "--temperature", "0", "--max_tokens", "48")
        assert query.returncode == 0 and query.stdout == direct.text + "\n"
        table = cli("stat", "--model", alias)
        assert table.returncode == 0 and "WORKER" in table.stdout and f"{alias} (llama_cpp)" in table.stdout
        data = json.loads(cli("stat", alias, "--json").stdout)
        for key in ("total_workers", "busy_workers", "idle_workers", "load_balance_strategy", "total_requests",
                    "state", "worker_max_concurrency", "workers_last_work_time", "queue_length", "latency_ms"):
            assert key in data
        assert data["total_requests"] == [1, 1] and data["state"] == [1, 1]
        listing = cli("list", "--json")
        assert alias in [row["alias"] for row in json.loads(listing.stdout)]
    finally:
        undo = cli("undeploy", "--model", alias)
    assert undo.returncode == 0 and f"Undeployed '{alias}'" in undo.stdout
    again = cli("undeploy", "--model", alias)
    assert again.returncode == 1 and "no deployment named" in one_line_error(again)


def test_byzerllm_infer_params_list_and_file(cli, tmp_path):
    import time

    from ray.util.state import list_actors

    from byzer_like._ray import NAMESPACE, named_actors

    def listed():
        proc = cli("list", "--json")
        assert proc.returncode == 0, proc.stderr
        return [row["alias"] for row in json.loads(proc.stdout)]

    def actors_of(alias):
        """Named actors of ``alias`` (its router and ``alias/worker-*``) still registered or ALIVE in Ray."""
        mine = lambda name: name == alias or name.startswith(alias + "/")  # noqa: E731
        alive = [a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                 if a.name and a.ray_namespace == NAMESPACE]
        return sorted({n for n in named_actors() + alive if mine(n)})

    def assert_gone(alias):
        deadline, left = time.monotonic() + 30, actors_of(alias)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = actors_of(alias)
        assert not left, f"undeploy left actors of {alias} behind: {left}"
        assert alias not in listed()

    spec = tmp_path / "echo.yaml"
    spec.write_text("model: cli_echo\npretrained_model_type: custom/echo\nnum_workers: 2\n"
                    "infer_params:\n  fail_marker: ENV {{MARKER}}\n")
    proc = cli("deploy", "--file", str(spec), "--worker_concurrency", "5", env={"MARKER": "zzz"})
    assert proc.returncode == 0, proc.stderr
    assert "2 workers x 5 slots" in proc.stdout
    assert actors_of("cli_echo") == ["cli_echo", "cli_echo/worker-0", "cli_echo/worker-1"]
    assert "cli_echo" in listed()
    undeploy = cli("undeploy", "cli_echo")  # graceful: the router shuts its workers down, then all are removed
    assert undeploy.returncode == 0, undeploy.stderr
    assert_gone("cli_echo")
    proc = cli("deploy", "--pretrained_model_type", "custom/echo", "--infer_params", "token_delay_s=0",
               "fail_marker=qq", "--model", "cli_echo2", "--num_workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert actors_of("cli_echo2") == ["cli_echo2", "cli_echo2/worker-0"]
    chat = cli("chat", "cli_echo2", "one qq three")
    assert chat.returncode == 1 and "failed on purpose" in one_line_error(chat)
    undeploy = cli("undeploy", "cli_echo2", "--force")
    assert undeploy.returncode == 0, undeploy.stderr
    assert_gone("cli_echo2")
    assert not [n for n in named_actors() if n.startswith("cli_echo")]


@pytest.mark.parametrize("args, message", [
    (["deploy", "--model", "x", "--num_workers", "0"], "invalid --num_workers"),
    (["deploy", "--model", "x", "--infer_params", "n_ctxx=1"], "'n_ctxx' is not an option"),
    (["deploy", "--model", "x", "--model_path", "/does/not/exist.gguf"], "is not a file"),
    (["deploy", "--model", "x", "--infer_backend", "deepspeed"], "infer_backend 'deepspeed' is unknown"),
    (["deploy", "--model", "x", "--cpus_per_worker", "64"], "needs 64 CPU in all"),
    (["deploy", "--model", "x", "--infer_params", "saas.api_key=sk-1"], "applies to saas"),
    (["deploy", "--model", "x", "--file", "/no/such.yaml"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(cli, args, message):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in one_line_error(proc)
    assert "x" not in [row["alias"] for row in json.loads(cli("list", "--json").stdout)]


def test_missing_alias_is_a_usage_error(cli):
    proc = cli("stat")
    assert proc.returncode == 2 and "give the alias" in proc.stderr


def test_duplicate_deploy_exits_2_and_replace_works(cli):
    base = ["deploy", "--pretrained_model_type", "custom/echo", "--model", "cli_dup"]
    assert cli(*base).returncode == 0
    try:
        dup = cli(*base)
        assert dup.returncode == 2 and "already deployed" in one_line_error(dup)
        assert cli(*base, "--num_workers", "2", "--replace").returncode == 0
        assert json.loads(cli("stat", "cli_dup", "--json").stdout)["total_workers"] == 2
    finally:
        cli("undeploy", "cli_dup", "--force")


def test_failed_load_exits_nonzero_with_engine_error_and_leaves_nothing(cli, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(2048))
    proc = cli("deploy", "--model", "cli_broken", "--model_path", str(broken), "--num_workers", "2")
    assert proc.returncode == 1
    assert "llama.cpp could not load" in one_line_error(proc)
    assert "cli_broken" not in [row["alias"] for row in json.loads(cli("list", "--json").stdout)]


def test_cluster_status_lists_nodes_and_deployments(cli):
    proc = cli("cluster", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["address"] == os.environ["RAY_ADDRESS"]
    assert data["nodes"] and data["nodes"][0]["alive"] is True
    assert data["dashboard_url"].startswith("http://127.0.0.1:")


def test_stat_interval_repeats_until_interrupted(cli, ray_cluster):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    assert cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "cli_watch").returncode == 0
    try:
        proc = subprocess.Popen([sys.executable, "-m", "byzer_like.cli", "stat", "cli_watch", "--interval", "0.3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "RAY_ADDRESS": ray_cluster})
        time.sleep(6)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert out.count("cli_watch (custom/echo)") >= 2
        assert proc.returncode == 130 and "Traceback" not in err
    finally:
        cli("undeploy", "cli_watch", "--force")
