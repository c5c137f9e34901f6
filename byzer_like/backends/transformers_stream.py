"""Helpers shared by the Hugging Face backends: stop strings over a text stream, and a model loader.

Example:
    >>> matcher = StopMatcher(["\\n\\n"])
    >>> matcher.feed("Paris.\\n\\nMore")
    ('Paris.', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byzer_like.errors import InvalidSpecError


class StopMatcher:
    """Cuts a growing text at the first stop string, holding back any tail that could start one.

    Args:
        stops: The stop strings (empty ones are ignored).
    """

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in stops or [] if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return what may be emitted now and whether a stop string was hit."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        hold = max((_overlap(self.pending, s) for s in self.stops), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        """What is still held back, at the end of the stream."""
        out, self.pending = self.pending, ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0


class IncrementalDecoder:
    """Decodes token ids as they come, emitting only complete characters (no half UTF-8 sequences).

    Args:
        tokenizer: A Hugging Face tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def add(self, ids: list[int]) -> str:
        """Add token ids; return the newly complete text."""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new, self.emitted = text[self.emitted:], len(text)
        return new


def hf_source(model_path: str) -> tuple[str, dict[str, Any]]:
    """``from_pretrained`` arguments for an HF folder or a GGUF file.

    Raises:
        InvalidSpecError: when the path is neither.
    """
    path = Path(model_path)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), {}
    raise InvalidSpecError(f"model_path '{model_path}' is neither a Hugging Face folder (with config.json) nor a "
                           ".gguf file; prepare one with `byzer-like models prepare`", param="model_path")
