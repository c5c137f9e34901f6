"""The typed deployment spec: one object from the CLI, YAML or Python, passed unchanged through every layer.

Example:
    >>> spec = DeploySpec(alias="smol_chat", backend=BackendSpec(infer_backend="llama_cpp"),
    ...                   resources=ResourceSpec(num_workers=2))
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
ADAPTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
LOCAL_ENGINES = ("llama_cpp", "vllm", "transformers")


class BackendSpec(BaseModel):
    """Which engine or provider serves the alias, and its engine-specific options.

    ``engine_kwargs`` is validated by the chosen backend's own options model (unknown keys are errors).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: str = Field(
        default="custom/auto",
        description="byzerllm's --pretrained_model_type: custom/auto, custom/bge, custom/echo or saas/<provider>.",
    )
    infer_backend: str | None = Field(
        default=None, description="Local engine: llama_cpp, vllm or transformers (ignored for saas/*)."
    )
    model_path: str | None = Field(
        default=None, description="GGUF file or model folder, a file:// or http(s):// URL of one (an archive of a "
                                  "folder: .tar, .tar.gz, .tgz, .zip), or a mounted scheme such as nas://share/x; "
                                  "default: the bundled SmolLM2.")
    model_sha256: str | None = Field(default=None, pattern=r"^(sha256:)?[0-9a-fA-F]{64}$",
                                     description="Expected SHA-256 of the downloaded file or archive.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Engine or provider options.")

    @field_validator("model_type")
    @classmethod
    def _model_type_shape(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError(f"'{value}' is not a model type; use e.g. custom/auto or saas/openai")
        return value

    @property
    def is_saas(self) -> bool:
        """True for SaaS proxies (``saas/<provider>``)."""
        return self.model_type.startswith("saas/")

    @property
    def registry_key(self) -> str:
        """The name the backend registry resolves: ``saas/openai``, ``llama_cpp``, ``custom/bge:transformers``."""
        if self.is_saas or self.model_type == "custom/echo":
            return self.model_type
        engine = self.infer_backend or "llama_cpp"
        return engine if self.model_type == "custom/auto" else f"{self.model_type}:{engine}"


class ResourceSpec(BaseModel):
    """How many workers, how much each may run at once, and what each reserves on the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_workers: int = Field(default=1, ge=1, le=1024, description="Worker actors in the pool.")
    worker_concurrency: int | None = Field(
        default=None, ge=1, le=100_000, description="Requests one worker runs at once; default per backend."
    )
    cpus_per_worker: float | None = Field(default=None, gt=0, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(default=0, ge=0, description="GPUs reserved per worker.")
    custom_resources: dict[str, float] = Field(default_factory=dict, description="Extra Ray resources per worker.")

    def per_worker(self) -> dict[str, float]:
        """What one worker reserves on a node, by Ray resource name (only what it needs: > 0)."""
        need = {"CPU": self.cpus_per_worker or 0, "GPU": self.gpus_per_worker, **self.custom_resources}
        return {name: amount for name, amount in need.items() if amount > 0}


class QueueSpec(BaseModel):
    """The router's bounded FIFO queue for requests that find every slot taken."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queue: int = Field(default=256, ge=0, description="Requests that may wait for a slot; 0 = no queue.")
    request_timeout_s: float = Field(default=600.0, gt=0, description="Longest wait in the queue, in seconds.")


class ScalingSpec(BaseModel):
    """How the pool lives: supervision (restart dead workers, retry their requests) and autoscaling (seed 003).

    With no ``min_workers``/``max_workers`` the pool keeps ``num_workers`` workers (healing, not scaling).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_workers: int | None = Field(default=None, ge=0, le=1024,
                                    description="Fewest workers; 0 = scale to zero when idle [num_workers].")
    max_workers: int | None = Field(default=None, ge=1, le=1024, description="Most workers [num_workers].")
    scale_up_step: int = Field(default=1, ge=1, le=1024, description="Workers added at once when scaling up.")
    max_idle_time_s: float = Field(default=300.0, gt=0,
                                   description="Seconds a worker may stay idle before it is removed (>= min).")
    target_ongoing_requests: float | None = Field(
        default=None, gt=0, description="Running + queued requests per worker to aim for [worker_concurrency].")
    upscale_delay_s: float = Field(default=0.0, ge=0, description="Load must stay above target this long to add.")
    downscale_delay_s: float = Field(default=0.0, ge=0, description="Extra wait after the last scale-up to remove.")
    max_retries: int = Field(default=2, ge=0, le=16,
                             description="Times a request whose worker died is retried on another worker.")
    health_check_period_s: float = Field(default=5.0, gt=0, description="Seconds between worker health checks.")
    health_check_timeout_s: float = Field(default=10.0, gt=0, description="A check slower than this fails.")
    max_restarts: int = Field(default=5, ge=0, description="Worker replacements allowed per restart window.")
    restart_window_s: float = Field(default=300.0, gt=0, description="The window max_restarts counts over.")

    def bounds(self, num_workers: int) -> tuple[int, int]:
        """``(min, max)`` workers, defaulting to ``num_workers`` (and never ``min > max``)."""
        low = num_workers if self.min_workers is None else self.min_workers
        high = max(num_workers if self.max_workers is None else self.max_workers, low, 1)
        return low, high


class AdapterSpec(BaseModel):
    """A LoRA adapter served on top of an alias's base model (seed 000's hot-updated adapters).

    ``source`` is a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``), a GGUF LoRA file, a
    ``file://`` or ``http(s)://`` URL of either (a ``.tar``/``.tar.gz``/``.zip`` of the folder), or for a SaaS alias
    the upstream model name the adapter stands for (a fine-tuned model).

    Example:
        >>> AdapterSpec(name="banana", source="/models/banana-lora")
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ADAPTER_PATTERN, description="Name requests use (``adapter=`` or model ALIAS:NAME).")
    source: str = Field(min_length=1, description="PEFT folder, GGUF LoRA file, URL, or SaaS upstream model.")
    scale: float = Field(default=1.0, gt=0, le=16, description="Strength the adapter is applied with.")


class DeploySpec(BaseModel):
    """Everything needed to deploy one alias.

    Example:
        >>> DeploySpec(alias="smol", backend=BackendSpec(infer_backend="llama_cpp"))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(pattern=ALIAS_PATTERN, description="Unique name of the deployment (byzerllm's --model).")
    backend: BackendSpec = Field(default_factory=BackendSpec, description="Engine or provider and its options.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Workers and their resources.")
    queue: QueueSpec = Field(default_factory=QueueSpec, description="Queueing when all slots are taken.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="Supervision and autoscaling.")
    adapters: tuple[AdapterSpec, ...] = Field(default=(), description="LoRA adapters loaded on every worker.")
    deploy_timeout_s: float = Field(default=900.0, gt=0, description="Longest wait for every worker to load.")
    stream_interval_ms: float | None = Field(
        default=None, ge=0, le=1000,
        description="Coalesce streamed tokens sent within this many ms into one message (the first token always "
                    "goes at once); 0 sends every token; default per backend (local engines 50, SaaS 0).")

    @model_validator(mode="after")
    def _engine_known_for_local(self) -> DeploySpec:
        engine = self.backend.infer_backend
        if not self.backend.is_saas and engine is not None and engine not in LOCAL_ENGINES:
            raise ValueError(f"infer_backend '{engine}' is unknown; use one of {', '.join(LOCAL_ENGINES)}")
        return self

    @model_validator(mode="after")
    def _workers_within_bounds(self) -> DeploySpec:
        low, high = self.scaling.bounds(self.resources.num_workers)
        if self.scaling.min_workers is not None and self.scaling.max_workers is not None and low > high:
            raise ValueError(f"min_workers ({low}) is more than max_workers ({high})")
        if "num_workers" in self.resources.model_fields_set and not low <= self.resources.num_workers <= high:
            raise ValueError(f"num_workers ({self.resources.num_workers}) must lie within min_workers ({low}) and "
                             f"max_workers ({high})")
        return self

    @model_validator(mode="after")
    def _adapter_names_unique(self) -> DeploySpec:
        names = [a.name for a in self.adapters]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"adapter name(s) {', '.join(dupes)} given more than once")
        return self

    @property
    def initial_workers(self) -> int:
        """Workers a deploy starts: ``num_workers`` brought within ``min_workers``..``max_workers``.

        At least 1, so a deploy proves the model loads; a scale-to-zero alias drops it after ``max_idle_time``.
        """
        low, high = self.scaling.bounds(self.resources.num_workers)
        return max(1, min(max(self.resources.num_workers, low), high))

    @property
    def worker_concurrency(self) -> int:
        """Slots per worker (resolved specs always have it set)."""
        return self.resources.worker_concurrency or 1

    @property
    def downloads_model(self) -> bool:
        """True when each worker fetches the model from an http(s) URL on its own node."""
        return (self.backend.model_path or "").lower().startswith(("http://", "https://"))

    def with_model_path(self, path: object) -> DeploySpec:
        """A copy whose backend serves the model at ``path`` (backends fill their default model this way)."""
        return self.model_copy(update={"backend": self.backend.model_copy(update={"model_path": str(path)})})

    def worker_name(self, index: int) -> str:
        """The Ray actor name of worker ``index``."""
        return f"{self.alias}/worker-{index}"
