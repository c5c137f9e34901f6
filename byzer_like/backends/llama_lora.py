"""LoRA adapters on one llama.cpp context, switched per request through llama.cpp's adapter API.

``llama_adapter_lora_init`` loads a GGUF LoRA against the model once; before each generation
``llama_set_adapters_lora`` puts exactly the request's adapter (or none) on the context. The KV cache of a
sequence computed under one adapter is never reused under another: switching resets the ``Llama`` object's token
history, so its prefix cache starts afresh.

Example:
    >>> adapters = LlamaAdapters()
    >>> adapters.load(llama, "banana", Path("banana.gguf"), 1.0)  # doctest: +SKIP
    >>> adapters.activate(llama, "banana")  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byzer_like.errors import BackendError, InvalidRequestError


@dataclass
class _Loaded:
    handle: Any
    scale: float
    path: Path


class LlamaAdapters:
    """The adapters loaded on one ``Llama`` object, and which one its context runs with now."""

    def __init__(self) -> None:
        self.loaded: dict[str, _Loaded] = {}
        self.active: str | None = None

    def load(self, llama: Any, name: str, path: Path, scale: float) -> None:
        """Load (or replace) adapter ``name`` from a GGUF LoRA file.

        Raises:
            InvalidRequestError: llama.cpp refused the file (not a LoRA of this base model).
        """
        import llama_cpp

        handle = llama_cpp.llama_adapter_lora_init(llama._model.model, str(path).encode())  # noqa: SLF001
        if not handle:
            raise InvalidRequestError(f"llama.cpp could not load the LoRA adapter '{name}' from {path.name}: it is "
                                      "not a GGUF LoRA made for this base model (architecture and sizes must match)",
                                      param="source")
        self.unload(llama, name)
        self.loaded[name] = _Loaded(handle, scale, path)

    def activate(self, llama: Any, name: str | None) -> None:
        """Put exactly adapter ``name`` (None: none) on the context before a generation."""
        if name == self.active:
            return
        import llama_cpp

        if name is None:
            status = llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, None, 0, None)  # noqa: SLF001
        else:
            try:
                entry = self.loaded[name]
            except KeyError:
                raise BackendError(f"adapter '{name}' is not loaded on this worker") from None
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(entry.handle)
            scales = (ctypes.c_float * 1)(entry.scale)
            status = llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, handles, 1, scales)  # noqa: SLF001
        if status:
            raise BackendError(f"llama.cpp could not switch to adapter '{name}' (status {status})")
        llama.reset()  # NOTE: no prefix of the KV cache computed under another adapter is reused
        self.active = name

    def unload(self, llama: Any, name: str) -> None:
        """Free adapter ``name`` (taken off the context first if it is on)."""
        entry = self.loaded.pop(name, None)
        if entry is None:
            return
        if self.active == name:
            self.activate(llama, None)
        import llama_cpp

        llama_cpp.llama_adapter_lora_free(entry.handle)

    def describe(self) -> dict[str, Any]:
        """Loaded adapters and the active one."""
        return {"adapters": sorted(self.loaded), "active_adapter": self.active}
