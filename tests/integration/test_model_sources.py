"""Models from URLs and mounted storage, deployed in the background (seed 000): ``deploy --async`` returns an id at
once, ``status --wait`` follows it to ``ready`` or ``failed``. A local HTTP server serves real archives of the
SmolLM2 GGUF and of its Hugging Face folder, and broken ones; a failed deploy says why and leaves nothing behind."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
from pathlib import Path

import pytest
from _engine_models import prepared
from conftest import run_cli

from byzer_like import Client
from byzer_like._ray import named_actors
from byzer_like.models import bundled_smollm2_gguf
from byzer_like.pool import list_aliases

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_cluster):
    """An HTTP server on 127.0.0.1 (a free port) over a folder of model archives; yields its base URL."""
    root = tmp_path_factory.mktemp("models_http")
    gguf = bundled_smollm2_gguf()
    with tarfile.open(root / "smol-gguf.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(gguf, arcname=f"smol/{gguf.name}")
    with tarfile.open(root / "smol-hf.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(prepared("smollm2-hf"), arcname="SmolLM2-hf")
    whole = (root / "smol-gguf.tar.gz").read_bytes()
    (root / "truncated.tar.gz").write_bytes(whole[: len(whole) // 3])
    with tarfile.open(root / "escape.tar.gz", "w:gz") as tar:
        data = b"x" * 64
        info = tarfile.TarInfo("../../escaped.gguf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def deploy_async(alias, *args):
    out = run_cli("deploy", "--model", alias, "--async", *args)
    assert out.returncode == 0, out.stderr
    deploy_id = out.stdout.split("in the background: ", 1)[1].split(";", 1)[0]
    assert deploy_id.startswith(alias + "@")
    return deploy_id, out


def leaves_nothing(alias):
    assert alias not in list_aliases()
    assert not [n for n in named_actors() if n.startswith(alias + "/")]


def test_gguf_archive_over_http_deploys_in_the_background(served):
    url, root = served
    digest = hashlib.sha256((root / "smol-gguf.tar.gz").read_bytes()).hexdigest()
    deploy_id, _ = deploy_async("src_gguf", "--infer_backend", "llama_cpp", "--model_path",
                                f"{url}/smol-gguf.tar.gz", "--model_sha256", digest)
    try:
        waited = run_cli("status", deploy_id, "--wait", "--json")
        assert waited.returncode == 0, waited.stderr
        status = json.loads(waited.stdout)
        assert status["phase"] == "ready" and status["id"] == deploy_id and status["error"] is None
        answer = Client("src_gguf").chat("Say hi.", max_tokens=8, temperature=0)
        assert answer.usage.completion_tokens > 0 and answer.text
        listed = run_cli("list")
        assert "src_gguf" in listed.stdout and "ready" in listed.stdout
    finally:
        run_cli("undeploy", "src_gguf", "--force")


def test_hf_folder_archive_with_the_python_api(served):
    from byzer_like import DeploySpec, deploy

    url, _ = served
    spec = DeploySpec.model_validate({"alias": "src_hf", "backend": {
        "infer_backend": "transformers", "model_path": f"{url}/smol-hf.tar.gz"}})
    start = time.monotonic()
    handle = deploy(spec, wait=False)
    assert time.monotonic() - start < 5  # it returns before anything loads (loading takes far longer)
    seen = []
    try:
        handle.wait(timeout=300, on_status=lambda s: seen.append(s["phase"]))
        assert handle.status()["phase"] == "ready" and seen[-1] == "ready"
        assert Client("src_hf").chat("Say hi.", max_tokens=4, temperature=0).usage.completion_tokens > 0
    finally:
        run_cli("undeploy", "src_hf", "--force")


@pytest.mark.parametrize(("name", "extra", "reason"), [
    ("src_sha", ["--model_sha256", "0" * 64], "sha256"),
    ("src_404", [], "404"),
    ("src_cut", [], "archive"),
    ("src_escape", [], "unsafe"),
])
def test_broken_sources_fail_with_a_reason_and_leave_nothing(served, name, extra, reason):
    url, _ = served
    file = {"src_sha": "smol-gguf.tar.gz", "src_404": "missing.tar.gz", "src_cut": "truncated.tar.gz",
            "src_escape": "escape.tar.gz"}[name]
    deploy_id, _ = deploy_async(name, "--infer_backend", "llama_cpp", "--model_path", f"{url}/{file}", *extra)
    waited = run_cli("status", deploy_id, "--wait")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "failed" in waited.stdout and reason in waited.stdout.lower(), waited.stdout
    assert "Traceback" not in waited.stdout + waited.stderr
    time.sleep(1)  # the router ends itself just after answering
    leaves_nothing(name)
    by_alias = run_cli("status", name, "--json")
    assert json.loads(by_alias.stdout)["phase"] == "failed"
    assert run_cli("undeploy", name).returncode == 0  # clears the kept status
    assert run_cli("status", name).returncode != 0


def test_nas_scheme_through_the_mount_setting(ray_cluster, monkeypatch):
    from byzer_like import DeploySpec
    from byzer_like.backends.registry import resolve_spec
    from byzer_like.errors import InvalidSpecError

    gguf = bundled_smollm2_gguf()
    share = gguf.parent.parent  # site-packages plays the NAS share
    monkeypatch.setenv("BYZER_LIKE_MOUNTS", f"nas={share}")
    spec = DeploySpec.model_validate({"alias": "src_nas", "backend": {
        "infer_backend": "llama_cpp", "model_path": f"nas://{gguf.parent.name}/{gguf.name}"}})
    assert Path(resolve_spec(spec).backend.model_path) == gguf
    monkeypatch.delenv("BYZER_LIKE_MOUNTS")
    with pytest.raises(InvalidSpecError, match="BYZER_LIKE_MOUNTS"):
        resolve_spec(spec)
    out = run_cli("deploy", "--model", "src_nas2", "--model_path", "nas://x/y.gguf")
    assert out.returncode == 2 and "BYZER_LIKE_MOUNTS" in out.stderr and "Traceback" not in out.stderr
