"""``saas/azure_openai``: Azure OpenAI through ``openai.AsyncAzureOpenAI`` (same chat/stream/embeddings path).

Example (the seed's line):
    byzer-like deploy --pretrained_model_type saas/azure_openai --model gpt4o --infer_params saas.api_type=azure \\
        saas.azure_endpoint=https://xxx.openai.azure.com/ saas.api_key=xxx saas.api_version=2024-02-15-preview \\
        saas.azure_deployment=gpt-4o-2024-05-13 saas.model=gpt-4o
"""

from __future__ import annotations

from typing import Any, ClassVar

import openai
from pydantic import Field

from byzer_like.backends.base import EngineOptions
from byzer_like.saas.openai_compat import OpenAIBackend, OpenAIOptions, sdk_http_client


class AzureOpenAIOptions(OpenAIOptions):
    """Options of ``saas/azure_openai``."""

    azure_endpoint: str = Field(description="https://<resource>.openai.azure.com/")
    api_version: str = Field(default="2024-02-15-preview", description="Azure OpenAI API version.")
    azure_deployment: str = Field(description="The deployment name Azure shows (required).")


class AzureOpenAIBackend(OpenAIBackend):
    """A proxy to an Azure OpenAI deployment.

    Example:
        >>> BackendSpec(model_type="saas/azure_openai", engine_kwargs={  # doctest: +SKIP
        ...     "model": "gpt-4o", "azure_endpoint": "https://x.openai.azure.com/", "azure_deployment": "gpt-4o"})
    """

    options_model: ClassVar[type[EngineOptions]] = AzureOpenAIOptions
    provider = "azure_openai"
    options: AzureOpenAIOptions

    def make_client(self) -> Any:
        """``openai.AsyncAzureOpenAI`` with our timeout and the SDK's retries off."""
        return openai.AsyncAzureOpenAI(api_key=self.secrets.get("api_key") or "EMPTY",
                                       azure_endpoint=self.options.azure_endpoint,
                                       azure_deployment=self.options.azure_deployment,
                                       api_version=self.options.api_version, timeout=self.options.timeout,
                                       max_retries=0, http_client=sdk_http_client(self.options.http_client))

    def describe(self) -> dict[str, Any]:
        """Adds the endpoint and deployment."""
        return {**super().describe(), "base_url": self.options.azure_endpoint,
                "azure_deployment": self.options.azure_deployment, "api_version": self.options.api_version}
