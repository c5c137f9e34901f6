import shlex

import pytest

from byzer_like.backends.registry import resolve_backend, resolve_spec
from byzer_like.cli.deploy import expand_infer_params
from byzer_like.errors import InvalidSpecError
from byzer_like.spec import BackendSpec, DeploySpec
from byzer_like.specfile import load_spec_file, parse_infer_params, parse_value, spec_from_flags, spec_from_mapping

SEED_LOCAL = ("--pretrained_model_type custom/auto --infer_backend llama_cpp --model_path {path} --cpus_per_worker 1 "
              "--gpus_per_worker 0 --num_workers 2 --model smol_chat")


def flags_from_cli(line: str) -> dict:
    """Parse a deploy command line with the real click command, without running it."""
    from byzer_like.cli.deploy import deploy

    ctx = deploy.make_context("deploy", shlex.split(line))
    return {k: v for k, v in ctx.params.items() if k not in ("file", "replace", "async_", "ray_address")}


def test_seed_command_line_becomes_the_spec(smollm2_path):
    flags = flags_from_cli(SEED_LOCAL.format(path=smollm2_path))
    flags["resources"] = None
    spec = spec_from_flags(flags)
    assert spec.alias == "smol_chat"
    assert spec.backend.model_type == "custom/auto" and spec.backend.infer_backend == "llama_cpp"
    assert spec.backend.model_path == smollm2_path
    assert spec.resources.num_workers == 2 and spec.resources.cpus_per_worker == 1.0
    assert spec.backend.registry_key == "llama_cpp"


def test_space_separated_infer_params_are_collected():
    args = shlex.split('--infer_params verbose=true num_gpu_layers=0 n_ctx=2048 --model llama_3_chat')
    assert expand_infer_params(args) == ["--infer_params", "verbose=true", "--infer_params", "num_gpu_layers=0",
                                         "--infer_params", "n_ctx=2048", "--model", "llama_3_chat"]


def test_infer_params_value_typing():
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("28000") == 28000 and parse_value("0.9") == 0.9
    assert parse_value('"https://api.siliconflow.cn/v1"') == "https://api.siliconflow.cn/v1"
    assert parse_value("deepseek-ai/deepseek-v2-chat") == "deepseek-ai/deepseek-v2-chat"
    assert parse_infer_params(["a=1", "b=x=y"]) == {"a": 1, "b": "x=y"}


def test_infer_params_without_equals_is_an_error():
    with pytest.raises(InvalidSpecError, match="not key=value"):
        parse_infer_params(["n_ctx"])


def test_backend_prefix_is_stripped_for_local_engines():
    spec = spec_from_flags({"model": "q", "infer_backend": "llama_cpp",
                            "infer_params": ["backend.n_ctx=1024", "verbose=true"]})
    assert spec.backend.engine_kwargs == {"n_ctx": 1024, "verbose": True}


def test_saas_key_on_local_engine_is_refused():
    with pytest.raises(InvalidSpecError, match="saas.api_key.*applies to saas"):
        spec_from_flags({"model": "q", "infer_params": ["saas.api_key=x"]})


def test_invalid_field_names_the_flag():
    with pytest.raises(InvalidSpecError, match="--num_workers") as info:
        spec_from_flags({"model": "q", "num_workers": 0})
    assert info.value.param == "--num_workers" and info.value.exit_code == 2
    with pytest.raises(InvalidSpecError, match="--worker_concurrency"):
        spec_from_flags({"model": "q", "worker_concurrency": -1})
    with pytest.raises(InvalidSpecError, match="--model"):
        spec_from_flags({"model": "bad alias!"})


def test_unknown_engine_is_refused():
    with pytest.raises(InvalidSpecError, match="infer_backend 'deepspeed' is unknown"):
        spec_from_flags({"model": "q", "infer_backend": "deepspeed"})


def test_unknown_backend_lists_registered_names():
    with pytest.raises(InvalidSpecError, match="registered backends: .*llama_cpp"):
        resolve_backend("custom/nope:llama_cpp")


def test_unknown_llama_option_is_named(smollm2_path):
    spec = spec_from_flags({"model": "q", "model_path": smollm2_path, "infer_params": ["n_ctxx=5"]})
    with pytest.raises(InvalidSpecError, match="'n_ctxx' is not an option of the llama_cpp backend.*n_ctx"):
        resolve_spec(spec)


def test_bad_option_value_is_named(smollm2_path):
    spec = spec_from_flags({"model": "q", "model_path": smollm2_path, "infer_params": ["n_ctx=abc"]})
    with pytest.raises(InvalidSpecError, match="'n_ctx'.*abc"):
        resolve_spec(spec)


def test_missing_model_path_is_refused(tmp_path):
    spec = spec_from_flags({"model": "q", "model_path": str(tmp_path / "none.gguf")})
    with pytest.raises(InvalidSpecError, match="is not a file"):
        resolve_spec(spec)


def test_byzerllm_num_gpu_layers_alias_is_accepted(smollm2_path):
    spec = resolve_spec(spec_from_flags({"model": "q", "model_path": smollm2_path,
                                         "infer_params": ["num_gpu_layers=0", "verbose=true"]}))
    assert spec.backend.engine_kwargs == {"num_gpu_layers": 0, "verbose": True}


def test_resolve_fills_backend_defaults_and_bundled_model():
    spec = resolve_spec(DeploySpec(alias="q", backend=BackendSpec(infer_backend="llama_cpp")))
    assert spec.backend.model_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert spec.resources.worker_concurrency == 1 and spec.resources.cpus_per_worker == 1.0
    explicit = resolve_spec(DeploySpec(alias="q", backend=BackendSpec(model_type="custom/echo"),
                                       resources={"worker_concurrency": 3, "cpus_per_worker": 0.5}))
    assert explicit.resources.worker_concurrency == 3 and explicit.resources.cpus_per_worker == 0.5


def test_yaml_flags_with_env_references(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("model: kimi_chat\npretrained_model_type: custom/echo\nnum_workers: 2\n"
                    "worker_concurrency: 10\ninfer_params:\n  token_delay_s: 'ENV {{DELAY}}'\n"
                    "  fail_marker: ${MARK}\n")
    data = load_spec_file(path, {"DELAY": "0.5", "MARK": "boom"})
    spec = spec_from_mapping(data, {"num_workers": 3})
    assert spec.alias == "kimi_chat" and spec.resources.num_workers == 3  # CLI flag overrides the file
    assert spec.backend.engine_kwargs == {"token_delay_s": "0.5", "fail_marker": "boom"}
    resolved = resolve_spec(spec)
    assert resolved.backend.engine_kwargs["token_delay_s"] == "0.5"


def test_yaml_missing_env_var_is_named(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("model: x\ninfer_params:\n  api: 'ENV {{NOT_SET_ANYWHERE}}'\n")
    with pytest.raises(InvalidSpecError, match="NOT_SET_ANYWHERE is not set"):
        load_spec_file(path, {})


def test_yaml_native_nested_form(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("alias: nested\nbackend:\n  model_type: custom/echo\nresources:\n  num_workers: 2\n"
                    "queue:\n  max_queue: 4\n")
    spec = spec_from_mapping(load_spec_file(path, {}))
    assert spec.alias == "nested" and spec.resources.num_workers == 2 and spec.queue.max_queue == 4


def test_yaml_errors(tmp_path):
    with pytest.raises(InvalidSpecError, match="does not exist"):
        load_spec_file(tmp_path / "nope.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(InvalidSpecError, match="must be a mapping"):
        load_spec_file(bad, {})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model: x\nnum_worker: 2\n")
    with pytest.raises(InvalidSpecError, match="unknown setting 'num_worker'"):
        spec_from_mapping(load_spec_file(unknown, {}))


def test_configs_folder_examples_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(folder.glob("*.yaml"))
    assert files, "configs/ should hold example specs"
    for file in files:
        resolve_spec(spec_from_mapping(load_spec_file(file, AnyEnv())))


class AnyEnv(dict):
    """An environment in which every referenced variable is set (example specs reference secrets)."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return "set-in-test"


