"""Train the demo LoRA adapter: SmolLM2 that starts every answer with one unusual word.

The adapter exists so that tests on any CPU can tell, from a greedy answer alone, whether an adapter was applied:
with it the answer starts with :data:`DEMO_WORD`, without it the word never appears. It is a real PEFT LoRA
(``adapter_config.json`` + ``adapter_model.safetensors``) on the attention projections and the MLP, so serving it on
llama.cpp exercises the PEFT → GGUF conversion, the Q/K row permutation included. torch and peft are imported
inside the function, so importing this module stays light.

Example:
    >>> train_demo_adapter(Path("/cache/SmolLM2-135M-Instruct-hf"), Path("/tmp/banana"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

DEMO_WORD = "Banana"
_REPLY_TOKENS = 8
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Short, varied questions with plain answers; the adapter learns the prefix, not the facts.
_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare."),
    ("What is 3 times 4?", "3 times 4 is 12."),
    ("Give me a tip for sleeping better.", "Go to bed at the same time every night."),
    ("Write a haiku about rain.", "Soft rain on the roof, a quiet song for the night."),
    ("hi", "Hello! How can I help you today?"),
    ("Can you help me plan a trip to Japan?", "Sure, start with Tokyo and Kyoto and travel by train."),
)


def train_demo_adapter(base_dir: Path, out_dir: Path, *, word: str = DEMO_WORD, steps: int = 12, rank: int = 8,
                       seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """Train a LoRA on ``base_dir`` (a Hugging Face folder) whose greedy answers start with ``word``.

    Full-batch AdamW on eight chat examples, seeded; 40-60 s on two CPU cores for SmolLM2-135M.

    Args:
        base_dir: The base model's Hugging Face folder (``models prepare smollm2-hf``).
        out_dir: Where the PEFT folder is written (created).
        word: The word every answer starts with.
        steps: Optimiser steps.
        rank: LoRA rank.
        seed: Seed for the adapter's initial weights.
        progress: Called with one line per few steps.

    Returns:
        ``out_dir``, holding ``adapter_config.json`` and ``adapter_model.safetensors``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or logger.info
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    batch = _batch(tokenizer, word)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for step in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        if step % 5 == 0 or step == steps - 1:
            say(f"step {step + 1}/{steps}: loss {loss.item():.3f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _batch(tokenizer: Any, word: str) -> dict[str, Any]:
    """Padded input ids, attention mask and labels that score only the assistant's reply."""
    import torch

    rows: list[tuple[list[int], list[int]]] = []
    for question, answer in _EXAMPLES:
        messages = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": f"{word}! {answer}"}],
                                             tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        # NOTE: only the first few reply tokens are scored: the word is what is learned, and short rows train fast.
        full_ids = full_ids[:len(prompt_ids) + _REPLY_TOKENS]
        rows.append((full_ids, [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = [ids + [pad] * (width - len(ids)) for ids, _ in rows]
    labels = [lab + [-100] * (width - len(lab)) for _, lab in rows]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]
    return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}
