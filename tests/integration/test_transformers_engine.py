"""The transformers engine end to end: CLI deploy (byzerllm flags, 2 workers), chat, stream, stat, undeploy."""

import json

import pytest

from _engine_models import prepared
from direct_engines import QUESTION, assert_gateway_answers_like, cut_at, stop_word, transformers_chat

pytestmark = pytest.mark.slow
ALIAS = "tf_smol"


@pytest.fixture(scope="module")
def tf_alias(ray_cluster):
    from conftest import run_cli

    path = prepared("smollm2-hf")
    out = run_cli("deploy", "--pretrained_model_type", "custom/auto", "--infer_backend", "transformers",
                  "--model_path", path, "--num_workers", "2", "--cpus_per_worker", "1",
                  "--infer_params", "backend.max_model_len=2048", "--model", ALIAS, timeout=600)
    assert out.returncode == 0, out.stderr
    yield ALIAS
    run_cli("undeploy", "--model", ALIAS, "--force")


@pytest.fixture(scope="module")
def direct():
    """SmolLM2's greedy answer from transformers' own ``generate`` on this machine (1 thread, as each worker)."""
    return transformers_chat(prepared("smollm2-hf"), QUESTION, max_tokens=24)


def test_the_real_model_is_loaded(tf_alias):
    from byzer_like import Client

    answer = Client(tf_alias, timeout=120).chat(QUESTION, max_tokens=24, temperature=0)
    assert answer.text.strip() and answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 24


def test_answer_is_what_transformers_answers_directly(tf_alias, cli, direct):
    from byzer_like import Client

    client = Client(tf_alias, timeout=120)
    for _ in range(2):  # LRU: once on each worker
        answer = client.chat(QUESTION, max_tokens=24, temperature=0)
        assert answer.text == direct.text and answer.finish_reason == direct.finish_reason
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (direct.prompt_tokens,
                                                                                direct.completion_tokens)
    chunks = list(client.stream(QUESTION, max_tokens=24, temperature=0))
    assert len([c for c in chunks if c.text]) > 2 and "".join(c.text for c in chunks) == direct.text
    assert chunks[-1].finish_reason == direct.finish_reason
    out = cli("chat", tf_alias, QUESTION, "--max-tokens", "24", "--temperature", "0")
    assert out.returncode == 0 and out.stdout == direct.text + "\n", out.stderr


def test_stop_strings_and_stat(tf_alias, cli, direct):
    from byzer_like import Client

    client = Client(tf_alias, timeout=120)
    before = sum(client.stat()["total_requests"])
    word = stop_word(direct.text)
    answer = client.chat(QUESTION, max_tokens=24, temperature=0, stop=[word])
    assert answer.text == cut_at(direct.text, word) and answer.finish_reason == "stop"
    client.chat("Say hi.", max_tokens=4)
    out = cli("stat", "--model", tf_alias, "--json")
    stat = json.loads(out.stdout)
    assert stat["total_workers"] == 2 and stat["busy_workers"] == 0 and stat["state"] == [1, 1]
    assert sum(stat["total_requests"]) == before + 2
    assert all(n >= 1 for n in stat["total_requests"])  # LRU spread the requests over both workers


def test_unsupported_param_is_a_clear_error(tf_alias):
    from byzer_like import Client
    from byzer_like.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="presence_penalty"):
        Client(tf_alias).chat("hi", presence_penalty=0.5)


def test_bad_option_and_unfit_model_leave_nothing(ray_cluster, cli):
    from byzer_like.pool import list_aliases

    bad = cli("deploy", "--infer_backend", "transformers", "--model_path", prepared("tiny-random"),
              "--infer_params", "backend.bogus_knob=1", "--model", "tf_bad")
    assert bad.returncode == 2 and "bogus_knob" in bad.stderr
    missing = cli("deploy", "--infer_backend", "transformers", "--model_path", "/no/such/folder", "--model", "tf_bad")
    assert missing.returncode == 2 and "/no/such/folder" in missing.stderr
    big = cli("deploy", "--infer_backend", "transformers", "--model_path", prepared("tiny-random"),
              "--cpus_per_worker", "1000", "--model", "tf_bad")
    assert big.returncode == 2 and "CPU" in big.stderr
    assert "tf_bad" not in list_aliases()


def test_broken_folder_fails_cleanly_and_tiny_model_runs(deployed, tmp_path):
    from byzer_like import Client, DeploySpec
    from byzer_like.errors import ModelLoadError
    from byzer_like.pool import list_aliases
    from byzer_like.spec import BackendSpec

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a folder without weights
    with pytest.raises(ModelLoadError, match="could not load"):
        deployed(DeploySpec(alias="tf_broken", backend=BackendSpec(infer_backend="transformers",
                                                                    model_path=str(tmp_path))))
    assert "tf_broken" not in list_aliases()
    tiny = DeploySpec(alias="tf_tiny", backend=BackendSpec(infer_backend="transformers",
                                                           model_path=prepared("tiny-random")))
    deployed(tiny)
    answer = Client("tf_tiny").chat("hello", max_tokens=5, ignore_eos=True)
    assert answer.usage.completion_tokens == 5 and answer.finish_reason == "length"


def test_gateway_answer_is_the_engines_own(ray_cluster, tf_alias, direct):
    from conftest import gateway_serving

    with gateway_serving() as url:
        assert_gateway_answers_like(direct, url, tf_alias, max_tokens=24)
