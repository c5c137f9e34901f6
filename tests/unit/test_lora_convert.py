"""Adapter formats and the PEFT → GGUF LoRA conversion, on a tiny synthetic llama GGUF (no real model needed).

The output is read back with the ``gguf`` package's own reader, so the metadata, names, shapes and values are checked
independently of the converter. The Q/K row permutation is checked against an explicit per-head index map.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from byzer_like import lora
from byzer_like.errors import InvalidRequestError, UnsupportedError

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_BLOCK, RANK, ALPHA = 16, 4, 2, 32, 2, 2, 4.0
HEAD_DIM = N_EMBD // N_HEAD
# (out, in) of each projection, Hugging Face order.
N_KV = N_HEAD_KV * HEAD_DIM
SHAPES = {"q_proj": (N_EMBD, N_EMBD), "k_proj": (N_KV, N_EMBD), "v_proj": (N_KV, N_EMBD),
          "o_proj": (N_EMBD, N_EMBD), "gate_proj": (N_FF, N_EMBD), "up_proj": (N_FF, N_EMBD),
          "down_proj": (N_EMBD, N_FF)}
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def write_base(path: Path, arch: str = "llama", n_block: int = N_BLOCK) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_block_count(n_block)
    writer.add_embedding_length(N_EMBD)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_token_list([f"tok{i}" for i in range(300)])  # a string array the header reader must skip
    writer.add_token_scores([0.0] * 300)
    writer.add_tensor("token_embd.weight", np.zeros((10, N_EMBD), np.float32))
    for block in range(n_block):
        for proj, shape in SHAPES.items():
            writer.add_tensor(f"blk.{block}.{lora.LLAMA_MODULES[proj]}.weight", np.zeros(shape, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def peft_state(seed: int = 0, ranks: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for block in range(N_BLOCK):
        for proj, (n_out, n_in) in SHAPES.items():
            rank = (ranks or {}).get(proj, RANK)
            prefix = f"base_model.model.model.layers.{block}.{PARENT[proj]}.{proj}"
            state[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, n_in)).astype(np.float32)
            state[f"{prefix}.lora_B.weight"] = rng.standard_normal((n_out, rank)).astype(np.float32)
    return state


def write_peft(folder: Path, state: dict[str, np.ndarray] | None = None, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base_config = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": list(SHAPES),
                   "bias": "none", "use_dora": False, "use_rslora": False}
    (folder / "adapter_config.json").write_text(json.dumps({**base_config, **config}))
    save_file(state if state is not None else peft_state(), str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture()
def base(tmp_path):
    return write_base(tmp_path / "base.gguf")


def read_lora(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def hf_key(block: int, proj: str, ab: str) -> str:
    return f"base_model.model.model.layers.{block}.{PARENT[proj]}.{proj}.lora_{ab}.weight"


def interleave_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """Per head, rows [x0..x(d/2-1), y0..] become [x0, y0, x1, y1, ...] (written as an explicit index map)."""
    out = np.empty_like(b)
    head_dim = b.shape[0] // n_head
    for head in range(n_head):
        for i in range(head_dim // 2):
            for half in range(2):
                out[head * head_dim + 2 * i + half] = b[head * head_dim + half * (head_dim // 2) + i]
    return out


# -- conversion ----------------------------------------------------------------------------------------------------
def test_metadata_names_shapes_and_values(tmp_path, base):
    state = peft_state()
    out = lora.peft_to_gguf(write_peft(tmp_path / "banana", state), base, tmp_path / "cache")
    assert out.parent == tmp_path / "cache" / "lora-gguf" and out.name.startswith("banana-")
    fields, tensors = read_lora(out)
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == ALPHA
    expected = {f"blk.{b}.{name}.weight.lora_{ab}" for b in range(N_BLOCK) for name in lora.LLAMA_MODULES.values()
                for ab in "ab"}
    assert set(tensors) == expected
    for block in range(N_BLOCK):
        for proj, (n_out, n_in) in SHAPES.items():
            a = tensors[f"blk.{block}.{lora.LLAMA_MODULES[proj]}.weight.lora_a"]
            b = tensors[f"blk.{block}.{lora.LLAMA_MODULES[proj]}.weight.lora_b"]
            # ggml order (ne): lora_a is (in, rank), lora_b (rank, out), as llama.cpp checks against the base
            assert list(a.shape) == [n_in, RANK] and list(b.shape) == [RANK, n_out]
            assert a.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(a.data, state[hf_key(block, proj, "A")])
            if proj not in ("q_proj", "k_proj"):
                np.testing.assert_array_equal(b.data, state[hf_key(block, proj, "B")])


def test_q_and_k_lora_b_rows_are_permuted_like_the_base_weights(tmp_path, base):
    state = peft_state(seed=1)
    _, tensors = read_lora(lora.peft_to_gguf(write_peft(tmp_path / "a", state), base, tmp_path / "cache"))
    q_in, k_in = state[hf_key(1, "q_proj", "B")], state[hf_key(1, "k_proj", "B")]
    q_out, k_out = tensors["blk.1.attn_q.weight.lora_b"].data, tensors["blk.1.attn_k.weight.lora_b"].data
    np.testing.assert_array_equal(q_out, interleave_rows(q_in, N_HEAD))
    np.testing.assert_array_equal(k_out, interleave_rows(k_in, N_HEAD_KV))  # K uses the kv head count
    assert not np.array_equal(q_out, q_in)
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight.lora_a"].data, state[hf_key(1, "q_proj", "A")])


def test_conversion_is_cached_by_content_and_base(tmp_path, base):
    folder = write_peft(tmp_path / "a")
    first = lora.peft_to_gguf(folder, base, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert lora.peft_to_gguf(folder, base, tmp_path / "cache") == first and first.stat().st_mtime_ns == stamp
    write_peft(folder, peft_state(seed=7))
    second = lora.peft_to_gguf(folder, base, tmp_path / "cache")
    assert second != first
    os.utime(base, ns=(base.stat().st_atime_ns, base.stat().st_mtime_ns + 10**9))
    assert lora.peft_to_gguf(folder, base, tmp_path / "cache") not in (first, second)
    assert not [p for p in (tmp_path / "cache" / "lora-gguf").iterdir() if p.name.startswith(".")]


def test_rslora_alpha_and_rank_patterns_fold_into_lora_b(tmp_path, base):
    state = peft_state(seed=2, ranks={"q_proj": 4})
    folder = write_peft(tmp_path / "a", state, use_rslora=True, rank_pattern={"q_proj": 4},
                        alpha_pattern={"v_proj": 8})
    fields, tensors = read_lora(lora.peft_to_gguf(folder, base, tmp_path / "cache"))
    assert fields["adapter.lora.alpha"] == ALPHA
    # PEFT scales by alpha/sqrt(r) (rsLoRA); llama.cpp by alpha/r from the file: lora_b carries the ratio
    np.testing.assert_allclose(tensors["blk.0.attn_output.weight.lora_b"].data,
                               state[hf_key(0, "o_proj", "B")] * math.sqrt(RANK), rtol=1e-6)
    np.testing.assert_allclose(tensors["blk.0.attn_v.weight.lora_b"].data,
                               state[hf_key(0, "v_proj", "B")] * (8 / math.sqrt(RANK)) / (ALPHA / RANK), rtol=1e-6)
    assert list(tensors["blk.0.attn_q.weight.lora_a"].shape) == [N_EMBD, 4]
    np.testing.assert_allclose(tensors["blk.0.attn_q.weight.lora_b"].data,
                               interleave_rows(state[hf_key(0, "q_proj", "B")], N_HEAD) * math.sqrt(4), rtol=1e-6)


def test_bfloat16_weights_are_read(tmp_path, base):
    state = {k: v.astype(np.float32) for k, v in peft_state(seed=3).items()}
    folder = write_peft(tmp_path / "a", state)
    header, blobs, offset = {}, [], 0
    for name, array in state.items():
        raw = (array.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # truncation to bf16
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    (folder / "adapter_model.safetensors").write_bytes(len(encoded).to_bytes(8, "little") + encoded + b"".join(blobs))
    _, tensors = read_lora(lora.peft_to_gguf(folder, base, tmp_path / "cache"))
    expected = (state[hf_key(0, "v_proj", "A")].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(tensors["blk.0.attn_v.weight.lora_a"].data, expected)


@pytest.mark.parametrize("extra_key, match", [
    ("base_model.model.model.embed_tokens.lora_embedding_A", "not embeddings or lm_head"),
    ("base_model.model.lm_head.lora_A.weight", "not embeddings or lm_head"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "can only adapt"),
])
def test_unsupported_modules_are_refused(tmp_path, base, extra_key, match):
    state = {**peft_state(), extra_key: np.zeros((2, 2), np.float32)}
    with pytest.raises(UnsupportedError, match=match):
        lora.peft_to_gguf(write_peft(tmp_path / "a", state), base, tmp_path / "cache")
    assert not (tmp_path / "cache" / "lora-gguf").exists() or not list((tmp_path / "cache" / "lora-gguf").iterdir())


@pytest.mark.parametrize("config, match", [
    ({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "lora_only"}, "bias='lora_only'"),
])
def test_unsupported_peft_features_are_refused(tmp_path, base, config, match):
    with pytest.raises(UnsupportedError, match=match):
        lora.peft_to_gguf(write_peft(tmp_path / "a", **config), base, tmp_path / "cache")


def test_non_llama_base_is_refused(tmp_path):
    qwen = write_base(tmp_path / "qwen.gguf", arch="qwen2")
    with pytest.raises(UnsupportedError, match="'qwen2' model is not supported.*convert_lora_to_gguf"):
        lora.peft_to_gguf(write_peft(tmp_path / "a"), qwen, tmp_path / "cache")


def test_adapter_for_another_model_is_refused(tmp_path):
    small = write_base(tmp_path / "one_block.gguf", n_block=1)
    with pytest.raises(InvalidRequestError, match=r"adapts blk\.1\.\w+\.weight, which the base model does not "
                                                  r"have \(1 blocks\)"):
        lora.peft_to_gguf(write_peft(tmp_path / "a"), small, tmp_path / "cache")
    state = peft_state()
    state[hf_key(0, "k_proj", "B")] = np.zeros((N_EMBD, RANK), np.float32)  # as if n_head_kv were 4
    with pytest.raises(InvalidRequestError, match="do not fit blk.0.attn_k.weight"):
        lora.peft_to_gguf(write_peft(tmp_path / "b", state), tmp_path / "one_block.gguf", tmp_path / "cache")


def test_half_a_pair_and_bad_alpha_are_refused(tmp_path, base):
    state = peft_state()
    del state[hf_key(0, "up_proj", "B")]
    with pytest.raises(InvalidRequestError, match="only one of lora_A/lora_B"):
        lora.peft_to_gguf(write_peft(tmp_path / "a", state), base, tmp_path / "cache")
    with pytest.raises(InvalidRequestError, match="lora_alpha 0"):
        lora.peft_to_gguf(write_peft(tmp_path / "b", lora_alpha=0), base, tmp_path / "cache")


# -- formats -------------------------------------------------------------------------------------------------------
def test_inspect_tells_peft_from_gguf(tmp_path, base):
    folder = write_peft(tmp_path / "a")
    assert lora.inspect_adapter(folder) == lora.LocalAdapter(kind="peft", path=folder)
    converted = lora.peft_to_gguf(folder, base, tmp_path / "cache")
    assert lora.inspect_adapter(converted) == lora.LocalAdapter(kind="gguf", path=converted)
    assert lora.gguf_lora_path(lora.inspect_adapter(converted), base, tmp_path / "cache") == converted
    assert lora.gguf_lora_path(lora.inspect_adapter(folder), base, tmp_path / "cache") == converted


def test_inspect_refuses_what_is_not_an_adapter(tmp_path, base):
    with pytest.raises(InvalidRequestError, match="GGUF model, not an adapter"):
        lora.inspect_adapter(base)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidRequestError, match="not a LoRA adapter.*adapter_config.json"):
        lora.inspect_adapter(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequestError, match="no adapter_config.json"):
        lora.inspect_adapter(tmp_path / "empty")
    (tmp_path / "empty" / "adapter_config.json").write_text("{}")
    with pytest.raises(InvalidRequestError, match="no adapter_model.safetensors"):
        lora.inspect_adapter(tmp_path / "empty")
    (tmp_path / "empty" / "adapter_config.json").write_text("{nope")
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        lora.inspect_adapter(tmp_path / "empty")
    (tmp_path / "truncated.gguf").write_bytes(base.read_bytes()[:200])
    with pytest.raises(InvalidRequestError, match="not a readable GGUF"):
        lora.inspect_adapter(tmp_path / "truncated.gguf")


def test_other_peft_types_are_unsupported(tmp_path):
    folder = write_peft(tmp_path / "a", peft_type="PREFIX_TUNING")
    with pytest.raises(UnsupportedError, match="PREFIX_TUNING adapter; only LoRA"):
        lora.inspect_adapter(folder)


def test_resolve_adapter_fetches_then_inspects(tmp_path):
    folder = write_peft(tmp_path / "a")
    assert lora.resolve_adapter(folder.as_uri(), tmp_path / "cache") == lora.LocalAdapter("peft", folder)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        lora.resolve_adapter(str(tmp_path / "missing"), tmp_path / "cache")


def test_header_reader_agrees_with_the_gguf_package(base):
    fields, tensors = lora.read_gguf_header(base)
    reader = gguf.GGUFReader(base)
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        assert fields[key] == (None if isinstance(value, list) else value), key
    assert tensors == {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
