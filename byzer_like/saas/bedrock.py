"""``saas/aws_bedrock``: AWS Bedrock's Converse API (``ConverseStream``) through ``boto3`` ``bedrock-runtime``.

boto3 has no async API, so blocking calls run on a bounded thread pool owned by the backend (``saas.max_threads``,
default 64): a worker still serves many requests at once, with at most that many threads however many requests
arrive (the rest wait for a thread, not for a worker slot). The binary AWS event stream is decoded by botocore;
each event is read off the pool and turned into chunks on the actor's event loop.

``saas.model_api_version`` is accepted as in byzerllm (defaulting to bedrock-2023-05-31 for ``anthropic.*``
models) and shown in ``stat``; Converse does not need it, so it is not sent.

Example:
    byzer-like deploy --pretrained_model_type saas/aws_bedrock --worker_concurrency 10 --model sonnet_3_5_chat \\
        --infer_params saas.aws_access_key=xxx saas.aws_secret_key=xx saas.region_name=us-east-1 \\
        saas.model=anthropic.claude-3-5-sonnet-20240620-v1:0
"""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, AsyncIterator, ClassVar

import boto3
import botocore.exceptions as bex
import urllib3.exceptions as uex
from botocore.config import Config
from pydantic import Field, SecretStr

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import InvalidRequestError, UnsupportedError
from byzer_like.protocol import ChatRequest, Chunk, Message, Usage
from byzer_like.saas.base import SaasBackend, SaasOptions
from byzer_like.saas.errors import ErrorMap, connection_error, error_for_status, timeout_error
from byzer_like.structured import ToolCallDelta

BEDROCK_PARAMS = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP", "stop": "stopSequences"}
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}
# AWS error codes say more than the HTTP status (an unknown key is a 403 UnrecognizedClientException).
CODE_STATUS = {"UnrecognizedClientException": 401, "InvalidSignatureException": 401, "ExpiredTokenException": 401,
               "AccessDeniedException": 403, "ValidationException": 400, "ResourceNotFoundException": 404,
               "ThrottlingException": 429, "throttlingException": 429, "ServiceQuotaExceededException": 429,
               "ModelTimeoutException": 408, "ServiceUnavailableException": 503, "InternalServerException": 500,
               "ModelStreamErrorException": 502, "modelStreamErrorException": 502}
FORMAT_TOOL = "json_answer"  # the forced tool that carries a JSON response_format


class BedrockOptions(SaasOptions):
    """Options of ``saas/aws_bedrock`` (the seed's keys)."""

    aws_access_key: SecretStr | None = Field(default=None, description="AWS access key id (sealed).")
    aws_access_key_file: str | None = Field(default=None, description="Read the access key id from this file.")
    aws_secret_key: SecretStr | None = Field(default=None, description="AWS secret access key (sealed).")
    aws_secret_key_file: str | None = Field(default=None, description="Read the secret key from this file.")
    aws_session_token: SecretStr | None = Field(default=None, description="AWS session token (sealed).")
    region_name: str = Field(default="us-east-1", description="AWS region.")
    model_api_version: str | None = Field(default=None, description="byzerllm's anthropic_version; not sent.")
    max_threads: int = Field(default=64, ge=1, le=1024, description="Threads for boto3's blocking calls.")


def _client_error(provider: str, exc: BaseException) -> Any:
    assert isinstance(exc, bex.ClientError)
    error = exc.response.get("Error", {})
    code = error.get("Code") or ""
    status = CODE_STATUS.get(code) or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_for_status(provider, status, f"{code}: {error.get('Message') or exc}", code=code or None)


class BedrockBackend(SaasBackend):
    """A proxy to AWS Bedrock's Converse API.

    Example:
        >>> BackendSpec(model_type="saas/aws_bedrock",
        ...             engine_kwargs={"model": "anthropic.claude-3-5-sonnet-20240620-v1:0", "region_name": "us-east-1"})
    """

    options_model: ClassVar[type[EngineOptions]] = BedrockOptions
    supported_params = frozenset(BEDROCK_PARAMS)
    supported_structured = frozenset({"tools", "json_object", "json_schema"})
    provider = "aws_bedrock"
    options: BedrockOptions

    @classmethod
    def error_map(cls) -> ErrorMap:
        """botocore's exception table."""
        return ErrorMap(cls.provider, {
            bex.ClientError: _client_error,  # EventStreamError (errors inside the stream) is a ClientError too
            bex.ReadTimeoutError: timeout_error,
            bex.ConnectTimeoutError: timeout_error,
            bex.EndpointConnectionError: connection_error,
            bex.ConnectionClosedError: connection_error,
            bex.ResponseStreamingError: connection_error,
            # NOTE: botocore's event-stream reader lets urllib3's errors through when the body is cut.
            uex.ReadTimeoutError: timeout_error,
            uex.ProtocolError: connection_error,
            bex.NoCredentialsError: lambda p, e: error_for_status(p, 401, "no AWS credentials: set "
                                                                  "saas.aws_access_key and saas.aws_secret_key"),
        })

    def make_client(self) -> Any:
        """A ``bedrock-runtime`` client with our timeout, boto's retries off, and the thread pool."""
        self.pool = ThreadPoolExecutor(self.options.max_threads, thread_name_prefix="bedrock")
        config = Config(read_timeout=self.options.timeout, connect_timeout=min(self.options.timeout, 10.0),
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        max_pool_connections=self.options.max_threads)
        return boto3.client("bedrock-runtime", region_name=self.options.region_name,
                            endpoint_url=self.options.base_url, config=config,
                            aws_access_key_id=self.secrets.get("aws_access_key"),
                            aws_secret_access_key=self.secrets.get("aws_secret_key"),
                            aws_session_token=self.secrets.get("aws_session_token"))

    def request_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        """The ConverseStream arguments: system lifted, content blocks, inferenceConfig."""
        system = [{"text": m.text()} for m in req.messages if m.role in ("system", "developer")]
        kwargs: dict[str, Any] = {"modelId": self.model_for(req),
                                  "messages": to_converse_messages([m for m in req.messages
                                                                    if m.role not in ("system", "developer")])}
        if system:
            kwargs["system"] = system
        config = self.params(req, BEDROCK_PARAMS)
        if config:
            kwargs["inferenceConfig"] = config
        tool_config = converse_tool_config(req)
        if tool_config:
            kwargs["toolConfig"] = tool_config
        return kwargs

    async def stream_chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        """One ConverseStream call; events are read on the pool, chunks built here."""
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self.pool, partial(self.client.converse_stream,
                                                                 **self.request_kwargs(req)))
        events = iter(response["stream"])
        reader = _EventReader(as_text=FORMAT_TOOL if _format_schema(req) is not None else None,
                              single=req.parallel_tool_calls is False)
        try:
            while (event := await loop.run_in_executor(self.pool, next, events, None)) is not None:
                chunk = reader.read(event)
                if chunk is not None:
                    yield chunk
        finally:
            response["stream"].close()
        if reader.finish is not None:
            finish = "stop" if reader.finish == "tool_calls" and not reader.tools else reader.finish
            yield Chunk(finish_reason=finish, usage=reader.usage)  # type: ignore[arg-type]

    async def shutdown(self) -> None:
        """Stop the thread pool."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        """Adds region and model_api_version (defaulted as byzerllm did)."""
        version = self.options.model_api_version or (
            "bedrock-2023-05-31" if self.options.model.startswith("anthropic.") else None)
        return {**super().describe(), "region_name": self.options.region_name, "model_api_version": version}


class _EventReader:
    """Converse stream events -> chunks: text, reasoning, and toolUse blocks as tool call pieces.

    Args:
        as_text: A tool whose input is the answer itself (the forced tool behind ``response_format``).
        single: Pass on only the first tool call (``parallel_tool_calls: false``; Converse has no such switch).
    """

    def __init__(self, as_text: str | None, single: bool) -> None:
        self.as_text, self.single = as_text, single
        self.finish: str | None = None
        self.usage = Usage()
        self.tools: dict[int, int] = {}  # content block index -> tool call index
        self.text_blocks: set[int] = set()

    def read(self, event: dict[str, Any]) -> Chunk | None:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = start.get("start", {}).get("toolUse")
            return self._tool_start(start.get("contentBlockIndex", 0), tool) if tool else None
        if "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            return self._delta(block.get("contentBlockIndex", 0), block["delta"])
        if "messageStop" in event:
            self.finish = STOP_REASONS.get(event["messageStop"].get("stopReason", ""), "stop")
        elif "metadata" in event:
            raw = event["metadata"].get("usage", {})
            self.usage = Usage(prompt_tokens=raw.get("inputTokens", 0), completion_tokens=raw.get("outputTokens", 0))
        return None

    def _tool_start(self, index: int, tool: dict[str, Any]) -> Chunk | None:
        if tool.get("name") == self.as_text:
            self.text_blocks.add(index)
            return None
        if self.single and self.tools:
            return None
        self.tools[index] = len(self.tools)
        return Chunk(tool_calls=[ToolCallDelta(index=self.tools[index], id=tool.get("toolUseId"),
                                               name=tool.get("name"))])

    def _delta(self, index: int, delta: dict[str, Any]) -> Chunk | None:
        if "text" in delta:
            return Chunk(text=delta["text"])
        if "toolUse" in delta:
            partial = delta["toolUse"].get("input", "")
            if index in self.text_blocks:
                return Chunk(text=partial)
            return Chunk(tool_calls=[ToolCallDelta(index=self.tools[index], arguments=partial)]) \
                if index in self.tools else None
        reasoning = delta.get("reasoningContent", {}).get("text")
        return Chunk(reasoning=reasoning) if reasoning else None


def converse_tool_config(req: ChatRequest) -> dict[str, Any] | None:
    """Converse ``toolConfig`` for the request's tools, or a forced tool carrying a JSON ``response_format``.

    Raises:
        UnsupportedError: ``tool_choice: none`` with tools (Converse has no such choice), or a format with tools.
    """
    schema = _format_schema(req)
    if schema is not None:
        if req.uses_tools():
            raise UnsupportedError("saas/aws_bedrock cannot combine tools with response_format",
                                   param="response_format")
        spec = {"name": FORMAT_TOOL, "description": "Give the answer as this tool's input.",
                "inputSchema": {"json": schema}}
        return {"tools": [{"toolSpec": spec}], "toolChoice": {"tool": {"name": FORMAT_TOOL}}}
    if not req.tools:
        return None
    if req.tool_choice == "none":
        raise UnsupportedError("saas/aws_bedrock has no tool_choice 'none'; leave the tools out instead",
                               param="tool_choice")
    tools = [{"toolSpec": {"name": t.function.name, "description": t.function.description or t.function.name,
                           "inputSchema": {"json": t.function.parameters_schema()}}} for t in req.tools]
    choice = req.tool_choice
    if choice is None or choice == "auto":
        return {"tools": tools, "toolChoice": {"auto": {}}}
    if choice == "required":
        return {"tools": tools, "toolChoice": {"any": {}}}
    return {"tools": tools, "toolChoice": {"tool": {"name": choice.name}}}  # type: ignore[union-attr]


def _format_schema(req: ChatRequest) -> dict[str, Any] | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    return fmt.schema_dict() or {"type": "object"}


def to_converse_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages (no system) as Converse messages; consecutive same-role turns merge (tool results)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        converted = to_converse(message)
        if out and out[-1]["role"] == converted["role"]:
            out[-1] = {"role": converted["role"], "content": out[-1]["content"] + converted["content"]}
        else:
            out.append(converted)
    return out


def to_converse(message: Message) -> dict[str, Any]:
    """An OpenAI-style message as a Converse message (text, data-URL images, toolUse, toolResult)."""
    if message.role == "tool":
        return {"role": "user", "content": [{"toolResult": {"toolUseId": message.tool_call_id or "",
                                                            "content": [{"text": message.text()}]}}]}
    if message.role not in ("user", "assistant"):
        raise UnsupportedError(f"saas/aws_bedrock cannot take a '{message.role}' message", param="messages")
    if message.tool_calls:
        text = [{"text": message.text()}] if message.text() else []
        return {"role": "assistant", "content": text + [
            {"toolUse": {"toolUseId": c.id, "name": c.function.name, "input": _arguments(c.function.arguments)}}
            for c in message.tool_calls]}
    if isinstance(message.content, str) or message.content is None:
        return {"role": message.role, "content": [{"text": message.content or ""}]}
    return {"role": message.role, "content": [_block(p) for p in message.content]}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        raise InvalidRequestError("a tool call's arguments are not JSON", param="messages") from None


def _block(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "text":
        return {"text": part.get("text", "")}
    url = (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
    if url.startswith("data:image/"):
        media, _, data = url[5:].partition(";base64,")
        return {"image": {"format": media.split("/")[1], "source": {"bytes": base64.b64decode(data)}}}
    raise UnsupportedError("saas/aws_bedrock takes text parts and data:image/... URLs only", param="messages")
