"""Every README example runs as written, so the README cannot drift from the code.

- The demo block: ``scripts/demo.sh`` runs exactly its commands, and each runs here and prints what the README says.
- The Python block: run as written in a fresh interpreter on a "new machine" (empty HOME, no cluster running), where
  ``deploy()`` must connect by itself and start an embedded head node.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ROOT, free_port, processes_mentioning, run_cli
from direct_engines import llama_chat

README = (ROOT / "README.md").read_text()


def fenced(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def byzer_commands(shell_text):
    """The ``byzer-like`` commands of a shell text (continuations joined, comments dropped), as argument lists."""
    joined = re.sub(r"\\\n\s*", " ", shell_text)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "byzer-like":
            commands.append(words[1:])
    return commands


def demo_block():
    [block] = [b for b in fenced("bash") if "smol_chat" in b]
    return byzer_commands(block)


def test_demo_script_runs_exactly_the_readme_commands():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    ran = byzer_commands(script.split("set -x\n", 1)[1])
    readme = demo_block()
    assert readme[-1] == ["cluster", "stop"]  # demo.sh does this in its cleanup, only for a cluster it started
    assert "byzer-like cluster stop" in script.split("set -x\n", 1)[0]
    assert ran == readme[:-1]


def test_readme_demo_commands_print_what_the_readme_says(ray_cluster, smollm2_path):
    commands = demo_block()[:-1]  # not `cluster stop`: here that would stop the test session's cluster
    outputs = {}
    for args in commands:
        out = run_cli(*args)
        assert out.returncode == 0, (args, out.stderr)
        outputs[" ".join(args[:2])] = out.stdout
    deploy_out = outputs["deploy --pretrained_model_type"]
    assert "Deployed 'smol_chat' (llama_cpp): 2 workers x 1 slots, 1 CPU / 0 GPU each" in deploy_out
    chat = next(a for a in commands if a[0] == "chat")
    assert outputs[" ".join(chat[:2])] == llama_chat(smollm2_path, chat[2], max_tokens=64).text + "\n"
    query = next(a for a in commands if a[0] == "query")
    question = query[query.index("--query") + 1]
    assert outputs["query --model"] == llama_chat(smollm2_path, question, max_tokens=32).text + "\n"
    assert "smol_chat (llama_cpp): 2 workers" in outputs["stat smol_chat"] and "HEALTHY" in outputs["stat smol_chat"]
    assert outputs["undeploy --model"].strip() == "Undeployed 'smol_chat'."




@pytest.mark.slow
def test_readme_python_example_runs_as_written_on_a_new_machine(ray_cluster):
    [block] = [b for b in fenced("python") if "deploy(" in b]
    home = tempfile.mkdtemp(prefix="blh", dir="/tmp")
    tmp = tempfile.mkdtemp(prefix="blr", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                             "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=home, RAY_TMPDIR=tmp, BYZER_LIKE_RAY_PORT=str(free_port()),
               BYZER_LIKE_DASHBOARD_PORT=str(free_port()))
    try:
        out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300, env=env,
                             cwd=tmp)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Started a local Ray cluster" in out.stderr  # deploy() connected by itself, starting a head node
        assert sum(json.loads(out.stdout.strip().splitlines()[-1])) == 3  # chat, stream, complete
    finally:  # NOTE: not run_cli: its environment points at the session's cluster, which must not be stopped
        stopped = subprocess.run([sys.executable, "-m", "byzer_like.cli", "cluster", "stop"], capture_output=True,
                                 text=True, timeout=120, env=env, cwd=ROOT)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 30
    while processes_mentioning(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(tmp)


def test_readme_autoscaling_yaml_is_a_valid_spec(tmp_path):
    from byzer_like.specfile import load_spec_file, spec_from_mapping

    [block] = [b for b in fenced("yaml") if "autoscaling:" in b]
    path = tmp_path / "spec.yaml"
    path.write_text(block)
    spec = spec_from_mapping(load_spec_file(path, {}), {})
    assert spec.alias == "chat" and spec.backend.infer_backend == "llama_cpp" and spec.queue.max_queue == 64
    scaling = spec.scaling
    assert (scaling.min_workers, scaling.max_workers, scaling.scale_up_step, scaling.max_idle_time_s) == (0, 3, 1, 120)
    assert (scaling.target_ongoing_requests, scaling.upscale_delay_s, scaling.downscale_delay_s) == (1, 0, 30)
    assert spec.initial_workers == 1


@pytest.mark.slow
def test_readme_adapter_block_runs_as_written(ray_cluster):
    """The LoRA block, line by line in bash (the venv's byzer-like on PATH) against the session cluster."""
    from _engine_models import engine_cache
    from lora_fixture import learned

    from byzer_like.pool import list_aliases, undeploy

    [block] = [b for b in fenced("bash") if "adapters add" in b]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "BYZER_LIKE_CACHE": str(engine_cache())}
    script = "set -euo pipefail\n" + block.replace("\nbyzer-like chat", "\necho '<<chat>>'\nbyzer-like chat")
    try:
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    finally:
        if "smol" in list_aliases():
            undeploy("smol", force=True)
    assert out.returncode == 0, out.stderr[-3000:]
    chat = out.stdout.split("<<chat>>\n", 1)[1].split("NAME", 1)[0]
    assert learned(chat), chat
    assert "Added adapter 'banana' to 'smol'" in out.stdout and "Removed adapter 'banana' from 'smol'." in out.stdout
    assert re.search(r"banana\s+ready\s+1\s+0", out.stdout)
