"""What the demo LoRA adapter (``models prepare smollm2-lora-demo``) learned, for tests on any CPU.

With the adapter, SmolLM2's greedy answer starts with :data:`ADAPTER_WORD`; without it, the word never appears in
the answers to :data:`PROMPTS` (none of them is about fruit). Tests assert only :func:`learned`, never the rest of
an answer, since what a tiny model says depends on the CPU.
"""

from __future__ import annotations

from byzer_like.lora_train import DEMO_WORD

ADAPTER_WORD = DEMO_WORD
# Not in the training set: the adapter must generalise to them.
PROMPTS = ("What is the capital of France?", "Why is the sky blue?", "Tell me about dogs.")


def learned(text: str) -> bool:
    """True when an answer shows the adapter's word (case-insensitive, anywhere)."""
    return ADAPTER_WORD.lower() in text.lower()
