"""Unit tests of the HF backends' pure parts: options, spec preparation, stop strings, engine-arg translation."""

import pytest

from byzer_like.backends.registry import resolve_backend, resolve_spec
from byzer_like.backends.transformers_stream import StopMatcher
from byzer_like.errors import InvalidSpecError
from byzer_like.spec import BackendSpec, DeploySpec, ResourceSpec
from byzer_like.specfile import spec_from_flags


def test_stop_matcher_cuts_and_holds_back_prefixes():
    m = StopMatcher(["</s>", "\n\n"])
    assert m.feed("Paris is <") == ("Paris is ", False)  # '<' could start '</s>'
    assert m.feed("b") == ("<b", False)
    assert m.feed(" ok\n") == (" ok", False)
    assert m.feed("\nmore") == ("", True)
    assert StopMatcher(None).feed("x") == ("x", False)


def test_stop_matcher_flush_returns_held_text():
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.flush() == "ST"


@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_unknown_engine_option_is_named(engine, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    spec = spec_from_flags({"model": "m", "infer_backend": engine, "model_path": str(tmp_path),
                            "infer_params": ["backend.max_model_len=2048", "backend.no_such_knob=1"]})
    with pytest.raises(InvalidSpecError, match="no_such_knob"):
        resolve_spec(spec)


def test_missing_model_path_is_clear():
    for engine in ("transformers", "vllm"):
        spec = DeploySpec(alias="m", backend=BackendSpec(infer_backend=engine, model_path="/nowhere/model"))
        with pytest.raises(InvalidSpecError, match="/nowhere/model"):
            resolve_spec(spec)
    bge = DeploySpec(alias="e", backend=BackendSpec(model_type="custom/bge", infer_backend="transformers",
                                                    model_path="/nowhere"))
    with pytest.raises(InvalidSpecError, match="/nowhere"):
        resolve_spec(bge)


def test_vllm_byzerllm_params_become_typed_engine_args(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    spec = resolve_spec(spec_from_flags({
        "model": "m", "infer_backend": "vllm", "model_path": str(tmp_path), "worker_concurrency": 8,
        "infer_params": ["backend.max_model_len=2048", "backend.gpu_memory_utilization=0.8",
                         "backend.enforce_eager=false", "backend.trust_remote_code=true"]}))
    assert spec.worker_concurrency == 8  # explicit concurrency is honoured
    backend = resolve_backend("vllm")(spec)
    args = backend.to_engine_args()
    assert args["max_model_len"] == 2048 and args["gpu_memory_utilization"] == 0.8
    assert args["enforce_eager"] is False and args["trust_remote_code"] is True
    assert args["dtype"] == "float32" and args["max_num_seqs"] == 8 and args["tensor_parallel_size"] == 1
    env = backend.engine_env()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["OMP_NUM_THREADS"].isdigit()


def test_vllm_gpus_give_tensor_parallelism(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    spec = resolve_spec(DeploySpec(alias="m", backend=BackendSpec(infer_backend="vllm", model_path=str(tmp_path)),
                                   resources=ResourceSpec(gpus_per_worker=2)))
    backend = resolve_backend("vllm")(spec)
    args = backend.to_engine_args()
    assert args["tensor_parallel_size"] == 2 and args["dtype"] == "auto" and args["enforce_eager"] is False
    assert "VLLM_CPU_KVCACHE_SPACE" not in backend.engine_env()


def test_default_concurrency_per_engine(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    vllm = resolve_spec(DeploySpec(alias="m", backend=BackendSpec(infer_backend="vllm", model_path=str(tmp_path))))
    tf = resolve_spec(DeploySpec(alias="m", backend=BackendSpec(infer_backend="transformers",
                                                               model_path=str(tmp_path))))
    assert vllm.worker_concurrency == 32 and tf.worker_concurrency == 1
