"""Request and response models shared by every layer.

Backends receive these typed requests and yield :class:`Chunk` objects from async generators; a non-streaming
answer is the aggregate of the same stream (:func:`collect`), so each backend has exactly one code path.

Example:
    >>> req = ChatRequest(messages=[Message(role="user", content="hi")], max_tokens=8)
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from byzer_like.structured import ResponseFormat, ToolCall, ToolCallDelta, ToolChoice, ToolDef, assemble, merge_deltas

FinishReason = Literal["stop", "length", "error", "cancelled", "tool_calls", "content_filter"]


class Message(BaseModel):
    """One chat message; ``content`` is text or a list of OpenAI content parts (text, image_url, ...)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"] = Field(description="Who speaks.")
    content: str | list[dict[str, Any]] | None = Field(default=None, description="Text or content parts.")
    tool_calls: list[ToolCall] | None = Field(default=None, description="Assistant: the tools it called.")
    tool_call_id: str | None = Field(default=None, description="Tool: the call this message answers.")

    def text(self) -> str:
        """The message's text, with non-text parts left out."""
        if isinstance(self.content, str) or self.content is None:
            return self.content or ""
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class SamplingParams(BaseModel):
    """Sampling parameters common to the engines; ``None`` means "the engine's default".

    A backend lists the fields it honours in ``Backend.supported_params``; a field set to a non-default value that
    the backend cannot honour is rejected with an error naming it, never silently dropped.
    """

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate; None = model limit.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(default=None, ge=0, description="Sample from the k most likely tokens (0 = all).")
    min_p: float | None = Field(default=None, ge=0, le=1, description="Minimum token probability.")
    stop: list[str] | None = Field(default=None, description="Stop strings.")
    repetition_penalty: float | None = Field(default=None, gt=0, description="Repetition penalty (1 = none).")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, description="Presence penalty.")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, description="Frequency penalty.")
    seed: int | None = Field(default=None, description="Random seed for reproducible sampling.")
    stop_token_ids: list[int] | None = Field(default=None, description="Token ids that end the answer (vLLM style).")
    ignore_eos: bool | None = Field(default=None, description="Keep generating past end-of-sequence (benchmarks).")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def set_params(self) -> set[str]:
        """Names of the sampling fields the caller set to a value."""
        return {name for name in SamplingParams.model_fields if getattr(self, name) is not None}


class ChatRequest(SamplingParams):
    """A chat request: messages plus sampling parameters, tools and the answer's format."""

    messages: list[Message] = Field(min_length=1, description="The conversation so far.")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Id for logs and cancellation.")
    adapter: str | None = Field(default=None, description="LoRA adapter to answer with; None = the base model.")
    tools: list[ToolDef] | None = Field(default=None, description="Functions the model may call.")
    tool_choice: ToolChoice | None = Field(default=None, description="none, auto, required or a named tool.")
    parallel_tool_calls: bool | None = Field(default=None, description="May the answer hold several calls.")
    response_format: ResponseFormat | None = Field(default=None, description="text, json_object, json_schema.")

    @field_validator("tool_choice")
    @classmethod
    def _check_tool_choice(cls, choice: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        names = {t.function.name for t in info.data.get("tools") or []}
        if choice not in (None, "none", "auto") and not names:
            raise ValueError("tool_choice asks for a tool call but no tools were given")
        if choice is not None and not isinstance(choice, str) and choice.name not in names:
            raise ValueError(f"tool_choice names '{choice.name}', which is not among the tools: {sorted(names)}")
        return choice

    def uses_tools(self) -> bool:
        """True when the answer may (or must) be a tool call."""
        return bool(self.tools) and self.tool_choice != "none"

    def structured_params(self) -> set[str]:
        """Names of the tool / format fields that ask a backend for something beyond free text."""
        return ({"tools"} if self.uses_tools() else set()) | _format_params(self.response_format)


class CompletionRequest(SamplingParams):
    """A plain text completion request (``response_format`` carries TGI's ``grammar``)."""

    prompt: str = Field(description="The text to continue.")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Id for logs and cancellation.")
    adapter: str | None = Field(default=None, description="LoRA adapter to answer with; None = the base model.")
    response_format: ResponseFormat | None = Field(default=None, description="json_object, json_schema or regex.")

    def structured_params(self) -> set[str]:
        """``{"response_format"}`` when the text must follow a format."""
        return _format_params(self.response_format)


def _format_params(fmt: ResponseFormat | None) -> set[str]:
    return {"response_format"} if fmt is not None and fmt.type != "text" else set()


class EmbeddingRequest(BaseModel):
    """Texts to embed; the output keeps their order."""

    model_config = ConfigDict(extra="forbid")

    input: list[str] = Field(min_length=1, description="Texts to embed.")


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class Chunk(BaseModel):
    """One streamed piece of an answer. The last chunk carries ``finish_reason`` and ``usage``."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


class Timings(BaseModel):
    """Where the time of one request went, in seconds."""

    first_token_s: float | None = None
    total_s: float = 0.0


class ChatResponse(BaseModel):
    """A complete answer: text (and/or tool calls), usage, finish reason, timings."""

    text: str
    reasoning: str = ""
    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason | None
    usage: Usage
    timings: Timings


class EmbeddingResponse(BaseModel):
    """One vector per input text, in input order."""

    embeddings: list[list[float]]
    usage: Usage = Field(default_factory=Usage)


AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
AUDIO_CONTENT_TYPES: dict[str, str] = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                                       "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}


class TranscriptionRequest(BaseModel):
    """Speech to text: one audio file (whisper-1 style).

    Example:
        >>> req = TranscriptionRequest(audio=b"RIFF...", filename="hello.wav", language="en")
    """

    model_config = ConfigDict(extra="forbid")

    audio: bytes = Field(min_length=1, description="The audio file's bytes (wav, mp3, m4a, webm, ...).")
    filename: str = Field(default="audio.wav", min_length=1, description="File name; its extension tells the format.")
    language: str | None = Field(default=None, description="ISO-639-1 language of the audio (None = detect).")
    prompt: str | None = Field(default=None, description="Text to guide the style or continue a previous segment.")
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = Field(
        default="json", description="json/verbose_json: text (+ language, duration); text/srt/vtt: that text as is.")
    temperature: float | None = Field(default=None, ge=0, le=1, description="Sampling temperature.")


class TranscriptionResponse(BaseModel):
    """The transcript; ``text`` holds the srt/vtt/plain text when that format was asked for."""

    text: str
    language: str | None = None
    duration: float | None = None


class SpeechRequest(BaseModel):
    """Text to speech (tts-1 style); ``voice`` None means the provider's default voice.

    Example:
        >>> req = SpeechRequest(input="Hello", voice="alloy", response_format="mp3")
    """

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=4096, description="The text to speak.")
    voice: str | None = Field(default=None, description="Provider voice name (alloy, BV001_streaming, ...).")
    response_format: AudioFormat = Field(default="mp3", description="Audio encoding of the answer.")
    speed: float | None = Field(default=None, ge=0.25, le=4.0, description="Speaking rate (1 = normal).")


class SpeechResponse(BaseModel):
    """Synthesised audio and its MIME type."""

    audio: bytes
    content_type: str = "audio/mpeg"


class ImageRequest(BaseModel):
    """Image generation (dall-e-3 style); None fields are left to the provider's defaults.

    Example:
        >>> req = ImageRequest(prompt="a red fox", size="1024x1024", response_format="b64_json")
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="What to draw.")
    n: int = Field(default=1, ge=1, le=10, description="How many images.")
    size: str | None = Field(default=None, description="e.g. 1024x1024.")
    quality: str | None = Field(default=None, description="e.g. standard, hd.")
    response_format: Literal["url", "b64_json"] | None = Field(default=None, description="URL or base64 data.")
    style: str | None = Field(default=None, description="e.g. vivid, natural.")


class GeneratedImage(BaseModel):
    """One image: a URL or base64 data, and the prompt the provider actually used."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImageResponse(BaseModel):
    """The generated images, in order."""

    created: int = Field(default_factory=lambda: int(time.time()))
    data: list[GeneratedImage]


def merge(first: Chunk, second: Chunk) -> Chunk:
    """One chunk carrying both chunks' text and tool call pieces, in order; the later finish reason and usage win."""
    calls = merge_deltas([*(first.tool_calls or []), *(second.tool_calls or [])]) or None
    return Chunk(text=first.text + second.text, reasoning=first.reasoning + second.reasoning, tool_calls=calls,
                 finish_reason=second.finish_reason or first.finish_reason, usage=second.usage or first.usage)


class Coalescer:
    """Merge streamed chunks so at most one goes out per ``interval_s``; the first and the last go out at once.

    Example:
        >>> c = Coalescer(0.05)
        >>> out = [x for chunk in chunks if (x := c.feed(chunk))] + [x for x in [c.flush()] if x]  # doctest: +SKIP
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.pending: Chunk | None = None
        self.last = float("-inf")

    def feed(self, chunk: Chunk) -> Chunk | None:
        """Take one chunk; return what should be sent now, if anything."""
        self.pending = chunk if self.pending is None else merge(self.pending, chunk)
        now = time.monotonic()
        if now - self.last < self.interval_s and not (chunk.finish_reason or chunk.usage):
            return None
        out, self.pending, self.last = self.pending, None, now
        return out

    def flush(self) -> Chunk | None:
        """What is still pending at the end of the stream."""
        out, self.pending = self.pending, None
        return out


async def coalesce(stream: AsyncIterator[Chunk], interval_s: float) -> AsyncIterator[Chunk]:
    """``stream`` through a :class:`Coalescer`."""
    coalescer = Coalescer(interval_s)
    async for chunk in stream:
        if (out := coalescer.feed(chunk)) is not None:
            yield out
    if (out := coalescer.flush()) is not None:
        yield out


def coalesce_iter(chunks: Iterator[Chunk], interval_s: float) -> Iterator[Chunk]:
    """The blocking twin of :func:`coalesce`, for engine threads."""
    coalescer = Coalescer(interval_s)
    for chunk in chunks:
        if (out := coalescer.feed(chunk)) is not None:
            yield out
    if (out := coalescer.flush()) is not None:
        yield out


async def collect(stream: AsyncIterator[Chunk]) -> ChatResponse:
    """Aggregate a chunk stream into one :class:`ChatResponse`.

    Args:
        stream: The backend's chunk stream.

    Returns:
        The joined text with the last chunk's finish reason and usage, and timings measured while reading.
    """
    start = time.perf_counter()
    first: float | None = None
    text, reasoning, deltas = [], [], []
    finish, usage = None, Usage()
    async for chunk in stream:
        if first is None and (chunk.text or chunk.reasoning or chunk.tool_calls):
            first = time.perf_counter() - start
        text.append(chunk.text)
        reasoning.append(chunk.reasoning)
        deltas.extend(chunk.tool_calls or [])
        finish = chunk.finish_reason or finish
        usage = chunk.usage or usage
    timings = Timings(first_token_s=first, total_s=time.perf_counter() - start)
    return ChatResponse(text="".join(text), reasoning="".join(reasoning), tool_calls=assemble(deltas) or None,
                        finish_reason=finish, usage=usage, timings=timings)
