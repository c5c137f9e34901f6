"""One-line deployments (easy-byzerllm's form): a preset names a provider, a base URL and a model.

``byzer-like deploy deepseek-chat --token-env DEEPSEEK_API_KEY --alias deepseek_chat`` expands to the long
``--pretrained_model_type saas/openai --infer_params saas.base_url=... saas.model=deepseek-chat`` form, with one
worker of 1000 slots, as easy-byzerllm did.

Example:
    >>> PRESETS["deepseek-chat"].model_type
    'saas/openai'
"""

from __future__ import annotations

from dataclasses import dataclass

from byzer_like.errors import InvalidSpecError


@dataclass(frozen=True)
class Preset:
    """A provider + base URL + model triple, and the env var its key usually lives in."""

    model_type: str
    model: str
    base_url: str | None
    key_env: str
    note: str = ""


PRESETS: dict[str, Preset] = {
    "deepseek-chat": Preset("saas/openai", "deepseek-chat", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "deepseek-reasoner": Preset("saas/openai", "deepseek-reasoner", "https://api.deepseek.com/v1",
                                "DEEPSEEK_API_KEY", "reasoning_content kept apart"),
    "gpt4o": Preset("saas/openai", "gpt-4o", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "gpt4o-mini": Preset("saas/openai", "gpt-4o-mini", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "o1-mini": Preset("saas/openai", "o1-mini", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "text-embedding-3-small": Preset("saas/openai", "text-embedding-3-small", "https://api.openai.com/v1",
                                     "OPENAI_API_KEY", "embeddings"),
    "sonnet3.5": Preset("saas/claude", "claude-3-5-sonnet-20240620", None, "ANTHROPIC_API_KEY"),
    "sonnet3.7": Preset("saas/claude", "claude-3-7-sonnet-20250219", None, "ANTHROPIC_API_KEY"),
    "haiku3.5": Preset("saas/claude", "claude-3-5-haiku-20241022", None, "ANTHROPIC_API_KEY"),
    "qwen-max": Preset("saas/qianwen", "qwen-max", None, "DASHSCOPE_API_KEY"),
    "qwen-vl-max": Preset("saas/qianwen_vl", "qwen-vl-max", None, "DASHSCOPE_API_KEY", "vision"),
    "qwen-embedding": Preset("saas/qianwen", "text-embedding-v2", None, "DASHSCOPE_API_KEY", "embeddings"),
    "siliconflow-deepseek-v2": Preset("saas/openai", "deepseek-ai/deepseek-v2-chat", "https://api.siliconflow.cn/v1",
                                      "SILICONFLOW_API_KEY"),
    "moonshot-v1-32k": Preset("saas/official_openai", "moonshot-v1-32k", "https://api.moonshot.cn/v1",
                              "MOONSHOT_API_KEY"),
    "yi-vision": Preset("saas/openai", "yi-vision", "https://api.lingyiwanwu.com/v1", "YI_API_KEY", "vision"),
    "ollama-llama3": Preset("saas/openai", "llama3:70b-instruct-q4_0", "http://127.0.0.1:11434/v1", "OLLAMA_KEY",
                            "any key works"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        InvalidSpecError: listing the known presets.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidSpecError(f"no preset named '{name}'; `byzer-like presets` lists them: "
                               f"{', '.join(sorted(PRESETS))}", param="preset") from None


def preset_flags(name: str, base_url: str | None) -> dict[str, object]:
    """The deploy flags a preset stands for (``base_url`` overrides the preset's host).

    Returns:
        ``pretrained_model_type``, ``num_workers``, ``worker_concurrency``, ``cpus_per_worker`` and the
        ``saas.*`` infer params.
    """
    preset = get_preset(name)
    params = [f"saas.model={preset.model}"]
    url = base_url or preset.base_url
    if url:
        params.append(f"saas.base_url={url}")
    return {"pretrained_model_type": preset.model_type, "num_workers": 1, "worker_concurrency": 1000,
            "cpus_per_worker": 0.001, "infer_params": tuple(params)}
