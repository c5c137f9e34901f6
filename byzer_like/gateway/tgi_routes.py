"""Hugging Face TGI's API per alias at ``/<alias>/``: ``generate``, ``generate_stream``, ``info``, ``health``, ``/``.

``text_generation.Client("http://host:port/<alias>")`` works unchanged. We do not expose token ids, so tokens
carry id 0; ``details.tokens`` lists the streamed pieces of a streamed answer and is empty for ``/generate``.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from byzer_like.errors import BackendUnavailableError, InvalidRequestError, UnsupportedError
from byzer_like.gateway.auth import Grant
from byzer_like.gateway.deps import aliases_of, grant_of
from byzer_like.gateway.errors import request_id_of
from byzer_like.gateway.sse import events, peek, sse_response
from byzer_like.protocol import Chunk
from byzer_like.structured import JsonSchemaSpec, ResponseFormat

router = APIRouter(tags=["tgi"])
_FINISH = {"length": "length", "stop": "eos_token"}
_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "typical_p")


class TGIParameters(BaseModel):
    """TGI ``parameters``; fields TGI defines that we cannot honour are refused when set (400 naming them)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1, description="None = the model's limit.")
    do_sample: bool = Field(default=False, description="False with no sampling field set = greedy.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    return_full_text: bool = False
    details: bool = False
    decoder_input_details: bool = False
    watermark: bool = False
    truncate: int | None = Field(default=None, ge=1)
    typical_p: float | None = Field(default=None, gt=0, lt=1)
    best_of: int | None = Field(default=None, ge=1)
    top_n_tokens: int | None = Field(default=None, ge=1)
    grammar: dict[str, Any] | None = Field(default=None, description="json (a schema) or regex: constrain the text.")
    adapter_id: str | None = None

    def sampling(self) -> dict[str, Any]:
        """Our sampling parameters.

        Raises:
            UnsupportedError: for a TGI feature set to a non-neutral value we cannot honour.
        """
        for name in ("decoder_input_details", "watermark", "truncate", "typical_p", "top_n_tokens"):
            if getattr(self, name) not in (None, False):
                raise UnsupportedError(f"parameter '{name}' is not supported", param=f"parameters.{name}")
        if self.best_of not in (None, 1):
            raise UnsupportedError("parameter 'best_of' > 1 is not supported", param="parameters.best_of")
        params = {k: getattr(self, k) for k in ("max_new_tokens", *_SAMPLING_FIELDS[:-1], "seed")
                  if getattr(self, k) is not None}
        params["max_tokens"] = params.pop("max_new_tokens", None)
        if self.stop:
            params["stop"] = self.stop
        if self.adapter_id:
            params["adapter"] = self.adapter_id  # a LoRA adapter of the alias (404 when it has none of that name)
        if self.grammar is not None:
            params["response_format"] = grammar_format(self.grammar)
        if not self.do_sample and not any(getattr(self, k) is not None for k in _SAMPLING_FIELDS):
            params["temperature"] = 0.0  # TGI: do_sample false means greedy decoding
        return {k: v for k, v in params.items() if v is not None}


def grammar_format(grammar: dict[str, Any]) -> ResponseFormat:
    """TGI's ``grammar`` as our response format: ``json`` (a schema, as an object or JSON text) or ``regex``.

    Raises:
        InvalidRequestError: an unknown grammar type or an unreadable schema, naming ``parameters.grammar``.
    """
    kind, value = grammar.get("type"), grammar.get("value")
    if kind == "regex" and isinstance(value, str):
        return ResponseFormat(type="regex", regex=value)
    if kind == "json_schema" and isinstance(value, dict):  # newer TGI: {"name": ..., "schema": {...}}
        value = value.get("schema", value)
    if kind in ("json", "json_schema"):
        try:
            schema = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            schema = None
        if isinstance(schema, dict):
            return ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(schema=schema, strict=True))
    raise InvalidRequestError("grammar must be {\"type\": \"json\", \"value\": <JSON schema>} or "
                              "{\"type\": \"regex\", \"value\": <pattern>}", param="parameters.grammar")


class TGIRequest(BaseModel):
    """TGI ``/generate`` body."""

    model_config = ConfigDict(extra="forbid")

    inputs: str = Field(description="The prompt.")
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False


def _token(text: str) -> dict[str, Any]:
    return {"id": 0, "text": text, "logprob": None, "special": False}


async def generate_response(alias: str, body: TGIRequest, request: Request) -> Response:
    """Answer a TGI request (streamed when ``body.stream``)."""
    aliases, params = aliases_of(request), body.parameters.sampling()
    prefix = body.inputs if body.parameters.return_full_text else ""
    if body.stream:
        chunks = await peek(aliases.stream(alias, "stream_complete", body.inputs, **params))
        rid = request_id_of(request)
        lines = events(_tgi_events(chunks, prefix, body.parameters.seed), lambda e: [e], request_id=rid,
                       done=False, error_extra={"error_type": "generation"})
        return sse_response(lines, rid)
    answer = await aliases.call(alias, "complete", body.inputs, **params)
    details = {"finish_reason": _FINISH.get(answer.finish_reason or "stop", "eos_token"),
               "generated_tokens": answer.usage.completion_tokens, "seed": body.parameters.seed, "prefill": [],
               "tokens": []}
    return JSONResponse([{"generated_text": prefix + answer.text, "details": details}])


async def _tgi_events(chunks: AsyncIterator[Chunk], prefix: str, seed: int | None) -> AsyncIterator[dict[str, Any]]:
    parts: list[str] = []
    pending: str | None = None  # NOTE: TGI puts generated_text on the last token event, so hold one back
    async for chunk in chunks:
        if chunk.text:
            if pending is not None:
                yield {"token": _token(pending), "generated_text": None, "details": None}
            pending = chunk.text
            parts.append(chunk.text)
        if chunk.finish_reason is not None:
            usage = chunk.usage.completion_tokens if chunk.usage else len(parts)
            details = {"finish_reason": _FINISH.get(chunk.finish_reason, "eos_token"), "generated_tokens": usage,
                       "seed": seed}
            yield {"token": _token(pending or ""), "generated_text": prefix + "".join(parts), "details": details}
            return
    if pending is not None:
        yield {"token": _token(pending), "generated_text": None, "details": None}


@router.post("/{alias}/generate", response_model=None)
async def generate(alias: str, body: TGIRequest, request: Request, grant: Grant = Depends(grant_of)) -> Response:
    """TGI ``/generate``: one JSON answer (or a stream when ``stream`` is true)."""
    grant.require(alias)
    return await generate_response(alias, body, request)


@router.post("/{alias}/generate_stream", response_model=None)
async def generate_stream(alias: str, body: TGIRequest, request: Request,
                          grant: Grant = Depends(grant_of)) -> Response:
    """TGI ``/generate_stream``: token events, the last one with ``generated_text`` and ``details``."""
    grant.require(alias)
    return await generate_response(alias, body.model_copy(update={"stream": True}), request)


@router.get("/{alias}/info")
async def info(alias: str, request: Request, grant: Grant = Depends(grant_of)) -> JSONResponse:
    """TGI ``/info`` from the alias's stat."""
    grant.require(alias)
    stat = await aliases_of(request).call(alias, "stat")
    slots = stat.get("worker_max_concurrency", 1) * stat.get("total_workers", 1)
    return JSONResponse({"model_id": alias, "model_sha": None, "model_dtype": None, "model_device_type": None,
                         "model_pipeline_tag": "text-generation", "max_concurrent_requests": slots,
                         "max_best_of": 1, "max_stop_sequences": 16, "max_input_tokens": None,
                         "max_total_tokens": None, "validation_workers": 1, "router": "byzer_like",
                         "backend": stat.get("backend"), "version": "byzer_like", "sha": None, "docker_label": None})


@router.get("/{alias}/health")
async def health(alias: str, request: Request) -> Response:
    """TGI ``/health``: 200 when every worker is healthy, else 503 (open without a key)."""
    problems = [p for p in await aliases_of(request).health(alias) if p]
    if problems:
        raise BackendUnavailableError(f"'{alias}' has unhealthy workers: {'; '.join(problems)}")
    return Response(status_code=200)
