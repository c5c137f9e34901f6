"""The adapter registry on a real cluster, with the echo engine (answers start with ``[NAME]`` under an adapter):
hot add and remove, 404s, deploy-time adapters, workers started later (kill -9, scale-up), removal waiting for
requests, a failed add leaving nothing. Real LoRA on real engines: test_lora_engines.py."""

import os
import signal
import threading
import time

import pytest
from conftest import run_cli, wait_for

from byzer_like import Client, DeploySpec
from byzer_like.errors import AliasExistsError, InvalidRequestError, ModelNotFoundError
from byzer_like.pool import scale


def echo_spec(alias, *, workers=1, adapters=(), **options):
    return DeploySpec.model_validate({
        "alias": alias, "backend": {"model_type": "custom/echo", "engine_kwargs": options},
        "resources": {"num_workers": workers, "worker_concurrency": 4}, "adapters": list(adapters)})


def test_hot_add_use_and_remove(deployed):
    deployed(echo_spec("ad_hot", workers=2))
    client = Client("ad_hot")
    assert client.chat("hi").text == "hi"
    entry = client.add_adapter("shout", "anything")
    assert entry["name"] == "shout" and entry["phase"] == "ready"
    # both workers have it: LRU alternates between them
    assert [client.chat(f"hi {i}", adapter="shout").text for i in range(4)] == [f"[shout] hi {i}" for i in range(4)]
    assert client.chat("hi").text == "hi"
    assert "".join(c.text for c in client.stream("yo", adapter="shout")) == "[shout] yo"
    listed = {a["name"]: a for a in client.adapters()}
    assert listed["shout"]["requests"] == 5 and listed["shout"]["running"] == 0
    assert client.stat()["adapters"][0]["name"] == "shout"
    client.remove_adapter("shout")
    with pytest.raises(ModelNotFoundError, match="adapter 'shout' is not loaded on 'ad_hot'"):
        client.chat("hi", adapter="shout")
    assert client.adapters() == []


def test_unknown_adapter_is_a_404_and_a_taken_name_a_409(deployed):
    deployed(echo_spec("ad_404", adapters=[{"name": "a", "source": "x"}]))
    client = Client("ad_404")
    with pytest.raises(ModelNotFoundError, match="adapter 'nope'.*its adapters: a"):
        client.chat("hi", adapter="nope")
    with pytest.raises(AliasExistsError, match="already exists"):
        client.add_adapter("a", "y")
    with pytest.raises(InvalidRequestError, match="name"):
        client.add_adapter("bad:name", "y")
    assert client.chat("hi", adapter="a").text == "[a] hi"


def test_a_failed_add_leaves_the_adapter_on_no_worker(deployed):
    deployed(echo_spec("ad_fail", workers=2))
    client = Client("ad_fail")
    with pytest.raises(InvalidRequestError, match="failed to load on purpose"):
        client.add_adapter("broken", "fail")
    assert client.adapters() == []
    with pytest.raises(ModelNotFoundError):
        client.chat("hi", adapter="broken")
    client.add_adapter("broken", "fine-now")  # the name is free again
    assert client.chat("hi", adapter="broken").text == "[broken] hi"


def test_workers_started_later_have_the_adapter(deployed):
    deployed(echo_spec("ad_later", workers=1))
    client = Client("ad_later")
    client.add_adapter("late", "x")
    pid = client.stat()["pid"][0]
    os.kill(pid, signal.SIGKILL)  # the replacement must load the adapter before it serves
    assert wait_for(lambda: (lambda st: st["ready_workers"] == 1 and pid not in st["pid"])(client.stat()), timeout=30)
    assert client.chat("after restart", adapter="late").text == "[late] after restart"
    scale("ad_later", 3)
    assert wait_for(lambda: client.stat()["ready_workers"] == 3, timeout=30)
    assert {client.chat(f"q{i}", adapter="late").text for i in range(6)} == {f"[late] q{i}" for i in range(6)}
    assert all(client.chat("p").text == "p" for _ in range(3))


def test_remove_waits_for_running_requests(deployed):
    deployed(echo_spec("ad_drain", token_delay_s=0.05))
    client = Client("ad_drain")
    client.add_adapter("slow", "x")
    words = " ".join(f"w{i}" for i in range(30))  # ~1.5 s of streaming
    out, removed_at, ended_at = [], [], []

    def stream():
        out.append("".join(c.text for c in client.stream(words, adapter="slow")))
        ended_at.append(time.monotonic())

    t = threading.Thread(target=stream)
    t.start()
    assert wait_for(lambda: client.adapters()[0]["running"] == 1, timeout=10)
    client.remove_adapter("slow")
    removed_at.append(time.monotonic())
    t.join(30)
    assert out == [f"[slow] {words}"]  # the running request finished with its adapter
    assert removed_at[0] >= ended_at[0]  # and removal returned only after it ended
    with pytest.raises(ModelNotFoundError):
        client.chat("x", adapter="slow")


def test_deploy_time_adapters_and_the_cli(deployed, ray_cluster):
    deployed(echo_spec("ad_cli", adapters=[{"name": "first", "source": "x"}]))
    out = run_cli("adapters", "list", "ad_cli")
    assert out.returncode == 0 and "first" in out.stdout and "ready" in out.stdout
    out = run_cli("adapters", "add", "ad_cli", "second", "y", "--scale", "0.5")
    assert out.returncode == 0, out.stderr
    out = run_cli("chat", "ad_cli", "hello there", "--adapter", "second")
    assert out.returncode == 0 and out.stdout.strip() == "[second] hello there"
    out = run_cli("adapters", "list", "ad_cli", "--json")
    names = [a["name"] for a in __import__("json").loads(out.stdout)]
    assert names == ["first", "second"]
    out = run_cli("chat", "ad_cli", "hello", "--adapter", "missing")
    assert out.returncode != 0 and "adapter 'missing' is not loaded" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("adapters", "remove", "ad_cli", "second")
    assert out.returncode == 0
    assert [a["name"] for a in Client("ad_cli").adapters()] == ["first"]


def test_cli_deploy_flag_and_saas_style_mapping(ray_cluster):
    from byzer_like.pool import undeploy

    out = run_cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "ad_flag",
                  "--adapters", "one=/some/where", "--adapters", "two=http://host/x.tar.gz")
    try:
        assert out.returncode == 0, out.stderr
        assert [a["name"] for a in Client("ad_flag").adapters()] == ["one", "two"]
        assert Client("ad_flag").chat("z", adapter="two").text == "[two] z"
    finally:
        undeploy("ad_flag", force=True)
    out = run_cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "ad_bad", "--adapters", "nosource")
    assert out.returncode == 2 and "NAME=SOURCE" in out.stderr


def test_a_restarted_router_still_serves_adapters_added_at_runtime(deployed):
    import ray

    from byzer_like._ray import get_actor

    deployed(echo_spec("ad_router", adapters=[{"name": "at_deploy", "source": "x"}]))
    client = Client("ad_router")
    client.add_adapter("at_runtime", "y")
    client.remove_adapter("at_deploy")
    router_pid = ray.get(get_actor("ad_router").__ray_call__.remote(lambda self: os.getpid()))
    os.kill(router_pid, signal.SIGKILL)

    def served():
        try:
            return Client("ad_router").chat("back", adapter="at_runtime").text == "[at_runtime] back"
        except Exception:  # noqa: BLE001 - the router is restarting
            return False

    assert wait_for(served, timeout=60)
    assert [a["name"] for a in Client("ad_router").adapters()] == ["at_runtime"]
    with pytest.raises(ModelNotFoundError):
        Client("ad_router").chat("x", adapter="at_deploy")
