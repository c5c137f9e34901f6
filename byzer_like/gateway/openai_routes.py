"""The OpenAI API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from byzer_like.errors import InvalidRequestError, ModelNotFoundError, UnsupportedError
from byzer_like.gateway.auth import Grant
from byzer_like.gateway.deps import aliases_of, grant_of
from byzer_like.gateway.errors import request_id_of
from byzer_like.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    OpenAIParams,
    check_stream_request,
    sampling_params,
)
from byzer_like.gateway.sse import events, peek, sse_response
from byzer_like.protocol import ChatResponse, Chunk, Usage

router = APIRouter(prefix="/v1", tags=["openai"])
_OPENAI_FINISH = {"stop", "length", "tool_calls", "content_filter"}


def _finish(reason: str | None) -> str:
    return reason if reason in _OPENAI_FINISH else "stop"


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


class _Reply:
    """Shared fields of one response (id, created, model) and its chunk renderers."""

    def __init__(self, req: OpenAIParams, prefix: str, obj: str) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = req.model
        self.object = obj
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def head(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def usage_event(self, chunk: Chunk) -> list[dict[str, Any]]:
        if not (self.include_usage and chunk.finish_reason is not None):
            return []
        return [self.head([], usage=_usage(chunk.usage or Usage()))]


async def _gather(calls: list[Any]) -> list[ChatResponse]:
    return list(await asyncio.gather(*calls))


def _sum_usage(answers: list[ChatResponse]) -> dict[str, int]:
    prompt = answers[0].usage.prompt_tokens
    completion = sum(a.usage.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# -- chat ------------------------------------------------------------------------------------------------------
@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           grant: Grant = Depends(grant_of)) -> Response:
    """Chat completion, streamed as SSE when ``stream`` is true."""
    grant.require(body.model)
    check_stream_request(body)
    if body.echo:
        raise UnsupportedError("parameter 'echo' is only supported on /v1/completions", param="echo")
    params, aliases, rid = sampling_params(body), aliases_of(request), request_id_of(request)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    reply = _Reply(body, "chatcmpl", "chat.completion.chunk" if body.stream else "chat.completion")
    if body.stream:
        chunks = await peek(aliases.stream(body.model, "stream", messages, **params))
        return sse_response(events(_with_role(chunks), lambda c: _chat_events(reply, c), request_id=rid), rid)
    answers = await _gather([aliases.call(body.model, "chat", messages, **params) for _ in range(body.choices())])
    choices = [{"index": i, "message": _message(a), "logprobs": None, "finish_reason": _finish(a.finish_reason)}
               for i, a in enumerate(answers)]
    return JSONResponse(reply.head(choices, usage=_sum_usage(answers)))


def _message(answer: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [call.model_dump() for call in answer.tool_calls]
        message["content"] = answer.text or None  # OpenAI: null content beside tool calls
    return message


async def _with_role(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk | None]:
    yield None  # the first event announces the assistant role
    async for chunk in chunks:
        yield chunk


def _chat_events(reply: _Reply, chunk: Chunk | None) -> list[dict[str, Any]]:
    if chunk is None:
        return [reply.head([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])]
    out = []
    delta: dict[str, Any] = {}
    if chunk.text:
        delta["content"] = chunk.text
    if chunk.reasoning:
        delta["reasoning_content"] = chunk.reasoning
    if chunk.tool_calls:
        delta["tool_calls"] = [piece.openai() for piece in chunk.tool_calls]
    if delta or chunk.finish_reason is not None:
        finish = None if chunk.finish_reason is None else _finish(chunk.finish_reason)
        out.append(reply.head([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]))
    return out + reply.usage_event(chunk)


# -- text completions ------------------------------------------------------------------------------------------
@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request, grant: Grant = Depends(grant_of)) -> Response:
    """Text completion; ``echo`` prepends the prompt."""
    grant.require(body.model)
    check_stream_request(body)
    prompt = _one_prompt(body.prompt)
    params, aliases, rid = sampling_params(body), aliases_of(request), request_id_of(request)
    reply = _Reply(body, "cmpl", "text_completion")
    prefix = prompt if body.echo else ""
    if body.stream:
        chunks = await peek(aliases.stream(body.model, "stream_complete", prompt, **params))
        if prefix:
            chunks = _prepend(prefix, chunks)
        return sse_response(events(chunks, lambda c: _text_events(reply, c), request_id=rid), rid)
    answers = await _gather([aliases.call(body.model, "complete", prompt, **params) for _ in range(body.choices())])
    choices = [{"index": i, "text": prefix + a.text, "logprobs": None, "finish_reason": _finish(a.finish_reason)}
               for i, a in enumerate(answers)]
    return JSONResponse(reply.head(choices, usage=_sum_usage(answers)))


def _one_prompt(prompt: str | list[str]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise InvalidRequestError("send one prompt per request (a string or a one-element list)", param="prompt")
    return prompt[0]


async def _prepend(text: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    yield Chunk(text=text)
    async for chunk in chunks:
        yield chunk


def _text_events(reply: _Reply, chunk: Chunk) -> list[dict[str, Any]]:
    out = []
    if chunk.text or chunk.finish_reason is not None:
        finish = None if chunk.finish_reason is None else _finish(chunk.finish_reason)
        out.append(reply.head([{"index": 0, "text": chunk.text, "logprobs": None, "finish_reason": finish}]))
    return out + reply.usage_event(chunk)


# -- embeddings and models -------------------------------------------------------------------------------------
@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, grant: Grant = Depends(grant_of)) -> JSONResponse:
    """Embeddings as floats or base64 (little-endian float32, as the openai SDK asks by default)."""
    grant.require(body.model)
    if body.dimensions is not None:
        raise UnsupportedError("parameter 'dimensions' is not supported", param="dimensions")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidRequestError("'input' must hold at least one text", param="input")
    result = await aliases_of(request).call(body.model, "embed_response", texts)
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.embeddings)]
    tokens = result.usage.prompt_tokens
    return JSONResponse({"object": "list", "data": data, "model": body.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.get("/models")
async def models(request: Request, grant: Grant = Depends(grant_of)) -> JSONResponse:
    """The deployed aliases this key may use (with their backend and adapters when the alias reports them)."""
    aliases = aliases_of(request)
    names = [n for n in await aliases.names() if grant.allows(n)]
    cards = await asyncio.gather(*(_card(aliases, n) for n in names))
    return JSONResponse({"object": "list", "data": [c for card in cards for c in card]})


@router.get("/models/{model:path}")
async def model(model: str, request: Request, grant: Grant = Depends(grant_of)) -> JSONResponse:
    """One alias's card."""
    grant.require(model)
    aliases = aliases_of(request)
    alias, adapter = await aliases.target(model)
    cards = await _card(aliases, alias, strict=True)
    wanted = alias if adapter is None else f"{alias}:{adapter}"
    card = next((c for c in cards if c["id"] == wanted), None)
    if card is None:
        raise ModelNotFoundError(f"'{alias}' has no adapter '{adapter}'", param="model", code="adapter_not_found")
    return JSONResponse(card)


async def _card(aliases: Any, alias: str, strict: bool = False) -> list[dict[str, Any]]:
    try:
        stat = await aliases.call(alias, "stat")
    except Exception:
        if strict:
            raise
        return []  # undeployed between listing and asking
    card = {"id": alias, "object": "model", "created": int(time.time() - stat.get("uptime_s", 0)),
            "owned_by": "byzer_like", "backend": stat.get("backend")}
    adapters = [a["name"] for a in stat.get("adapters") or [] if a.get("phase") == "ready"]
    return [card] + [{**card, "id": f"{alias}:{a}", "parent": alias, "root": alias} for a in adapters]
