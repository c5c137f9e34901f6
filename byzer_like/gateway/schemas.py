"""Request models of the OpenAI routes, including seed 002's extended (vLLM-style) sampling fields.

Every field lands in one of four places (see ``docs/gateway.md``):

- passed to the backend as a ``SamplingParams`` field, where ``Backend.check_params`` honours it or rejects it
  with a 400 naming it (``top_k``, ``min_p``, ``repetition_penalty``, ``stop_token_ids``, ...);
- honoured by the gateway itself (``n`` for non-streamed requests, ``echo`` on completions, ``stream_options``);
- metadata that changes nothing in the answer (``user``, ``conversation_id``);
- passed to the backend as a ``ChatRequest`` field: ``tools``, ``tool_choice``, ``parallel_tool_calls``,
  ``response_format`` (a backend that cannot honour them answers 400 naming the field);
- rejected with a 400 naming it whenever set to a non-neutral value (``use_beam_search: true``, ...).

A field at its neutral value (``n: 1``, ``ignore_eos: false``, ``skip_special_tokens: true``, ...) asks for
nothing and is accepted everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from byzer_like.errors import InvalidRequestError, UnsupportedError
from byzer_like.protocol import AudioFormat, Message, SamplingParams
from byzer_like.structured import ResponseFormat, ToolChoice, ToolDef

# NOTE: neutral value of each optional field: set to this, the field asks for nothing.
NEUTRAL: dict[str, Any] = {
    "n": 1, "echo": False, "ignore_eos": False, "use_beam_search": False, "skip_special_tokens": True,
    "spaces_between_special_tokens": True, "include_stop_str_in_output": False, "length_penalty": 1.0,
    "add_generation_prompt": True, "enable_repeat_stopper": False, "add_default_stop": True, "logprobs": False,
    "logit_bias": {}, "stop_token_ids": [], "white_list_token_ids": [], "white_list_token": [], "force_prompt": "",
    "stop": [], "suffix": "",
}  # best_of's neutral value is n
GATEWAY_FIELDS = frozenset({"model", "messages", "prompt", "stream", "stream_options", "n", "user",
                            "conversation_id", "max_completion_tokens"})
# passed to the backend as ChatRequest fields (Backend.check_structured refuses what an alias cannot honour)
STRUCTURED_FIELDS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format"})


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(default=False, description="Send a last chunk with the usage.")
    continuous_usage_stats: bool = Field(default=False, description="vLLM: usage on every chunk (not supported).")


class ExtendedParams(BaseModel):
    """Seed 002's sampling fields beyond OpenAI's (vLLM and byzerllm extensions)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(default=None, ge=-1, description="Keep the k most likely tokens (-1/0 = all).")
    min_p: float | None = Field(default=None, ge=0, le=1, description="Minimum token probability.")
    repetition_penalty: float | None = Field(default=None, gt=0, description="1 = no penalty.")
    length_penalty: float | None = Field(default=None, description="Beam search length penalty.")
    stop_token_ids: list[int] | None = Field(default=None, description="Token ids that end the answer.")
    ignore_eos: bool | None = Field(default=None, description="Generate past end-of-sequence.")
    skip_special_tokens: bool | None = Field(default=None, description="Drop special tokens from the text.")
    spaces_between_special_tokens: bool | None = Field(default=None, description="Space around special tokens.")
    include_stop_str_in_output: bool | None = Field(default=None, description="Keep the stop string in the text.")
    best_of: int | None = Field(default=None, ge=1, description="Sample this many, return the best n.")
    use_beam_search: bool | None = Field(default=None, description="Beam search instead of sampling.")
    logit_bias: dict[str, float] | None = Field(default=None, description="Token -> bias added to its logit.")
    white_list_token_ids: list[int] | None = Field(default=None, description="Only these token ids may be sampled.")
    white_list_token: list[str] | None = Field(default=None, description="Only these tokens may be sampled.")
    force_prompt: str | None = Field(default=None, description="byzerllm: text forced into the prompt.")
    enable_repeat_stopper: bool | None = Field(default=None, description="byzerllm: stop on repetition loops.")
    add_default_stop: bool | None = Field(default=None, description="Stop at the model's own stop tokens.")
    conversation_id: int | str | None = Field(default=None, description="Caller's conversation id (logged only).")


class OpenAIParams(ExtendedParams):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1, description="The alias.")
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate; None = model limit.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=16, description="Answers to return (non-streamed only, > 1).")
    stop: str | list[str] | None = Field(default=None)
    stream: bool | None = Field(default=False)
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = Field(default=None)
    user: str | None = Field(default=None, description="End-user id (logged only).")

    def choices(self) -> int:
        """How many answers to produce (``n``)."""
        return self.n or 1


class ChatCompletionRequest(OpenAIParams):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="OpenAI's newer name of max_tokens.")
    echo: bool | None = None
    add_generation_prompt: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(OpenAIParams):
    """``POST /v1/completions``; ``echo`` is honoured by the gateway (the prompt is prepended)."""

    prompt: str | list[str] = Field(description="One prompt (a one-element list is accepted).")
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)


class EmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(description="A text or a list of texts.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class SpeechBody(BaseModel):
    """``POST /v1/audio/speech``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096, description="The text to speak.")
    voice: str | None = Field(default=None, description="Voice name; the alias's default when omitted.")
    response_format: AudioFormat = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, description="Voice instructions (not supported; 400 if set).")
    stream_format: Literal["audio"] | None = Field(default=None, description="Only whole audio is sent.")


class ImagesBody(BaseModel):
    """``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    style: str | None = None
    user: str | None = None


def sampling_params(req: BaseModel) -> dict[str, Any]:
    """The backend's sampling parameters of a request; non-neutral fields nobody can honour raise.

    Raises:
        UnsupportedError: 400 naming the first field that is set but neither the gateway nor any backend
            parameter can carry.
    """
    params: dict[str, Any] = {}
    for name in sorted(req.model_fields_set):
        value = getattr(req, name)
        neutral = (getattr(req, "n", None) or 1) if name == "best_of" else NEUTRAL.get(name, object())
        if value is None or name in GATEWAY_FIELDS or neutral == value:
            continue
        if name in SamplingParams.model_fields or name in STRUCTURED_FIELDS:
            params[name] = value
        elif name != "echo":
            hint = f" or set it to {neutral!r}" if name in NEUTRAL or name == "best_of" else ""
            raise UnsupportedError(f"parameter '{name}' is not supported by this gateway's backends; remove it{hint}",
                                   param=name)
    if getattr(req, "max_completion_tokens", None) is not None:
        params.setdefault("max_tokens", req.max_completion_tokens)  # type: ignore[attr-defined]
    if params.get("top_k") == -1:  # vLLM spells "all tokens" -1; ours is 0
        params["top_k"] = 0
    return params


def check_stream_request(req: OpenAIParams) -> None:
    """Reject what a streamed request cannot do.

    Raises:
        InvalidRequestError: ``n`` > 1 with ``stream``, or continuous usage stats.
    """
    if req.stream and req.choices() > 1:
        raise InvalidRequestError("'n' > 1 is only supported without streaming", param="n")
    if req.stream_options is not None and req.stream_options.continuous_usage_stats:
        raise UnsupportedError("stream_options.continuous_usage_stats is not supported",
                               param="stream_options.continuous_usage_stats")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError("stream_options is only allowed with stream: true", param="stream_options")
