"""The demo LoRA on the engines themselves, without Ray: PEFT on transformers, the converted GGUF on llama.cpp.

``models prepare smollm2-lora-demo`` trains the adapter (about a minute on two cores, after the ~40 s SmolLM2 folder)
into ``$BYZER_LIKE_CACHE`` when set, else a folder for this module. Answers are only checked with
:func:`lora_fixture.learned`: with the adapter the word shows, without it it does not.

The per-request switching test is the recipe the llama.cpp backend uses: one ``Llama``, adapters set or cleared
on its context before each request, and ``reset()`` so no KV prefix computed under the other setting is reused.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
import pytest
from lora_fixture import PROMPTS, learned

from byzer_like import lora
from byzer_like.models import bundled_smollm2_gguf
from byzer_like.prepare import PREPARED_MODELS, prepare_model

pytestmark = pytest.mark.slow
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    env = os.environ.get("BYZER_LIKE_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("lora_cache")


@pytest.fixture(scope="module")
def adapter(cache) -> Path:
    return prepare_model("smollm2-lora-demo", cache=cache)


@pytest.fixture(scope="module")
def hf_model(cache, adapter):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare_model("smollm2-hf", cache=cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.generation_config.temperature = model.generation_config.top_p = model.generation_config.top_k = None
    return tokenizer, model


def hf_answer(tokenizer, model, prompt: str) -> str:
    import torch

    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def llama(lora_path: Path | None = None, **kwargs):
    from llama_cpp import Llama

    return Llama(model_path=str(bundled_smollm2_gguf()), n_ctx=512, verbose=False, seed=0,
                 chat_format="chat_template.default", lora_path=str(lora_path) if lora_path else None, **kwargs)


def llama_answer(llm, prompt: str) -> str:
    llm.reset()  # NOTE: no KV prefix from the previous request (computed under other adapters) may be reused
    out = llm.create_chat_completion([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=MAX_TOKENS)
    return out["choices"][0]["message"]["content"]


def test_demo_adapter_is_a_peft_lora_with_q_and_k(adapter, cache):
    assert lora.inspect_adapter(adapter) == lora.LocalAdapter(kind="peft", path=adapter)
    config = lora._read_config(adapter)
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(config["target_modules"])
    assert PREPARED_MODELS["smollm2-lora-demo"].is_ready(cache)


def test_transformers_with_peft_shows_the_word_and_the_base_does_not(hf_model, adapter):
    from peft import PeftModel

    tokenizer, model = hf_model
    base = [hf_answer(tokenizer, model, p) for p in PROMPTS]
    assert not any(learned(t) for t in base), base
    tuned = PeftModel.from_pretrained(model, str(adapter), adapter_name="banana")
    with_adapter = [hf_answer(tokenizer, tuned, p) for p in PROMPTS]
    assert all(learned(t) for t in with_adapter), with_adapter
    with tuned.disable_adapter():  # one model object serves base requests too
        assert [hf_answer(tokenizer, tuned, p) for p in PROMPTS] == base
    tuned.unload()  # leave the shared base model as it was


def test_llama_cpp_with_the_converted_lora_shows_the_word(adapter, cache):
    converted = lora.peft_to_gguf(adapter, bundled_smollm2_gguf(), cache)
    assert lora.inspect_adapter(converted).kind == "gguf"
    base = [llama_answer(llama(), p) for p in PROMPTS]
    assert not any(learned(t) for t in base), base
    tuned = llama(converted)
    with_adapter = [llama_answer(tuned, p) for p in PROMPTS]
    assert all(learned(t) for t in with_adapter), with_adapter


def test_llama_cpp_switches_adapters_per_request_on_one_object(adapter, cache):
    import llama_cpp

    converted = lora.peft_to_gguf(adapter, bundled_smollm2_gguf(), cache)
    llm = llama()
    handle = llama_cpp.llama_adapter_lora_init(llm.model, str(converted).encode())
    assert handle, "llama_adapter_lora_init returned NULL"
    assert not llama_cpp.llama_adapter_lora_init(llm.model, str(adapter / "adapter_config.json").encode())

    def use(adapters: list, scale: float = 1.0) -> None:
        if adapters:
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
            scales = (ctypes.c_float * len(adapters))(*([scale] * len(adapters)))
            assert llama_cpp.llama_set_adapters_lora(llm.ctx, array, len(adapters), scales) == 0
        else:
            assert llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None) == 0

    try:
        base = [llama_answer(llm, p) for p in PROMPTS]
        assert not any(learned(t) for t in base), base
        for prompt, expected in zip(PROMPTS, base, strict=True):
            use([handle])
            tuned = llama_answer(llm, prompt)
            assert learned(tuned), tuned
            use([])
            assert llama_answer(llm, prompt) == expected
            use([handle])
            assert llama_answer(llm, prompt) == tuned
            use([handle], scale=0.0)
            assert llama_answer(llm, prompt) == expected
            use([])
    finally:
        use([])  # NOTE: an adapter is freed only once no context uses it
        llama_cpp.llama_adapter_lora_free(handle)
    assert [llama_answer(llm, p) for p in PROMPTS] == base


def test_converted_q_and_k_deltas_match_peft(adapter, cache, hf_model, monkeypatch, tmp_path):
    """Only q_proj/k_proj adapted: llama.cpp's logit change must track PEFT's; without the row permutation it
    does not (the check below proves the test can fail)."""
    import torch
    from peft import PeftModel
    from safetensors.numpy import load_file, save_file

    qk = tmp_path / "qk"
    qk.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (qk / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj", "k_proj"]}))
    state = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v for k, v in state.items() if ".q_proj." in k or ".k_proj." in k}, str(qk / "adapter_model.safetensors"))
    tokenizer, model = hf_model
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], add_generation_prompt=True,
                                         tokenize=False) + "The sky looks blue because"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf_base = model(torch.tensor([ids])).logits[0].numpy()
        tuned = PeftModel.from_pretrained(model, str(qk))
        hf_delta = (tuned(torch.tensor([ids])).logits[0].numpy() - hf_base).ravel()
        tuned.unload()

    def llama_logits(lora_path: Path | None) -> np.ndarray:
        llm = llama(lora_path, logits_all=True)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])

    gguf_base = llama_logits(None)
    delta = (llama_logits(lora.peft_to_gguf(qk, bundled_smollm2_gguf(), cache)) - gguf_base).ravel()
    assert np.corrcoef(hf_delta, delta)[0, 1] > 0.95
    assert 0.9 < np.polyfit(hf_delta, delta, 1)[0] < 1.1  # alpha / rank scaling as PEFT's
    monkeypatch.setattr(lora, "_permute_rows", lambda rows, n_head: rows)
    unpermuted = (llama_logits(lora.peft_to_gguf(qk, bundled_smollm2_gguf(), tmp_path / "cache2")) - gguf_base).ravel()
    assert np.corrcoef(hf_delta, unpermuted)[0, 1] < 0.5
