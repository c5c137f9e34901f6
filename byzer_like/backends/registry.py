"""Backend registry: name -> ``"module:Class"``, resolved lazily.

Lazy resolution keeps ``import byzer_like`` free of torch, vllm and llama_cpp, and lets each Ray worker import its
own backend class.

Example:
    >>> resolve_backend("llama_cpp")  # doctest: +SKIP
    <class 'byzer_like.backends.llama_cpp.LlamaCppBackend'>
"""

from __future__ import annotations

import importlib

from byzer_like.backends.base import Backend
from byzer_like.errors import InvalidSpecError
from byzer_like.spec import DeploySpec, ResourceSpec

_REGISTRY: dict[str, str] = {
    "llama_cpp": "byzer_like.backends.llama_cpp:LlamaCppBackend",
    "custom/echo": "byzer_like.backends.echo:EchoBackend",
    "transformers": "byzer_like.backends.transformers:TransformersBackend",
    "vllm": "byzer_like.backends.vllm:VllmBackend",
    "custom/bge:transformers": "byzer_like.backends.embeddings:EmbeddingBackend",
    # SaaS proxies (byzer_like/saas/): the key is the model type
    "saas/openai": "byzer_like.saas.openai_compat:OpenAIBackend",
    "saas/official_openai": "byzer_like.saas.openai_compat:OpenAIBackend",
    "saas/azure_openai": "byzer_like.saas.azure_openai:AzureOpenAIBackend",
    "saas/claude": "byzer_like.saas.claude:ClaudeBackend",
    "saas/aws_bedrock": "byzer_like.saas.bedrock:BedrockBackend",
    "saas/qianwen": "byzer_like.saas.qianwen:QianwenBackend",
    "saas/qianwen_vl": "byzer_like.saas.qianwen:QianwenVLBackend",
    "saas/volcengine": "byzer_like.saas.volcengine:VolcengineBackend",
    "saas/azure": "byzer_like.saas.azure_tts:AzureTTSBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register a backend class under ``name``.

    Args:
        name: The registry key (see ``BackendSpec.registry_key``).
        target: ``"package.module:ClassName"``.
    """
    _REGISTRY[name] = target


def registered_names() -> list[str]:
    """All registered backend names, sorted."""
    return sorted(_REGISTRY)


def resolve_backend(name: str) -> type[Backend]:
    """Import and return the backend class registered as ``name``.

    Raises:
        InvalidSpecError: if no backend has that name; the message lists the registered ones.
    """
    target = _REGISTRY.get(name)
    if target is None:
        raise InvalidSpecError(
            f"no backend named '{name}'; registered backends: {', '.join(registered_names())}",
            param="pretrained_model_type")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_spec(spec: DeploySpec) -> DeploySpec:
    """Validate ``spec`` against its backend and fill the backend's defaults (concurrency, CPUs).

    This runs at the edge, before any actor starts.

    Raises:
        InvalidSpecError: on an unknown backend, bad engine options or an unusable model path.
    """
    backend_cls = resolve_backend(spec.backend.registry_key)
    path = spec.backend.model_path
    if spec.downloads_model:  # NOTE: each worker downloads it on its own node, then checks it (worker.start)
        backend_cls.parse_options(spec)
    else:
        if path and "://" in path:  # file:// and mounted storage (nas://...): the same path on every node
            from byzer_like.prepare import cache_dir
            from byzer_like.sources import fetch

            spec = spec.with_model_path(fetch(path, cache_dir(), sha256=spec.backend.model_sha256))
        spec = backend_cls.prepare_spec(spec)
    res = spec.resources
    resources = ResourceSpec(
        num_workers=res.num_workers,
        worker_concurrency=res.worker_concurrency or backend_cls.default_concurrency,
        cpus_per_worker=res.cpus_per_worker or backend_cls.default_cpus,
        gpus_per_worker=res.gpus_per_worker,
        custom_resources=res.custom_resources,
    )
    interval = spec.stream_interval_ms
    return spec.model_copy(update={"resources": resources, "stream_interval_ms": (
        backend_cls.default_stream_interval_ms if interval is None else interval)})
