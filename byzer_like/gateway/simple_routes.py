"""The seeds' simple per-alias endpoints.

- seed 004: ``POST /<alias>/`` with ``{"prompt", "history", ...}`` -> ``{"response", "history", "status", "time"}``
  (the same path also takes TGI's ``{"inputs", "parameters"}``, as TGI's ``POST /`` does);
- seed 003: ``GET /<alias>/chat?prompt=...`` or ``POST /<alias>/chat`` ``{"prompt"}`` -> the answer as text/plain.

Unlike the seeds, no sampling defaults are invented: an omitted field means the model's own default.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from byzer_like.gateway.auth import Grant
from byzer_like.gateway.deps import aliases_of, grant_of
from byzer_like.gateway.tgi_routes import TGIRequest, generate_response

router = APIRouter(tags=["simple"])


class SimpleRequest(BaseModel):
    """Seed 004's request: a prompt, earlier ``[question, answer]`` pairs and optional sampling fields."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The question.")
    history: list[tuple[str, str]] = Field(default_factory=list, description="Earlier [question, answer] pairs.")
    max_length: int | None = Field(default=None, ge=1, description="Most new tokens (None = model limit).")
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    adapter_name: str | None = Field(default=None, description="LoRA adapter of the alias to answer with (seed 000).")

    def messages(self) -> list[dict[str, str]]:
        """The history and the prompt as chat messages."""
        out = []
        for question, answer in self.history:
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return out + [{"role": "user", "content": self.prompt}]

    def params(self) -> dict[str, Any]:
        """Sampling parameters the caller set."""
        values = {"max_tokens": self.max_length, "top_p": self.top_p, "top_k": self.top_k,
                  "temperature": self.temperature, "repetition_penalty": self.repetition_penalty,
                  "adapter": self.adapter_name}
        return {k: v for k, v in values.items() if v is not None}


class PromptBody(BaseModel):
    """Seed 003's POST body."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    adapter_name: str | None = None


@router.post("/{alias}/", response_model=None)
async def root(alias: str, body: TGIRequest | SimpleRequest, request: Request,
               grant: Grant = Depends(grant_of)) -> Response:
    """Seed 004's chat (``prompt``/``history``) or TGI's ``POST /`` (``inputs``), by the body's shape."""
    grant.require(alias)
    if isinstance(body, TGIRequest):
        return await generate_response(alias, body, request)
    answer = await aliases_of(request).call(alias, "chat", body.messages(), **body.params())
    return JSONResponse({"response": answer.text, "history": [*map(list, body.history), [body.prompt, answer.text]],
                         "status": 200, "time": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")})


async def _plain(alias: str, prompt: str, request: Request, adapter: str | None) -> PlainTextResponse:
    params = {"adapter": adapter} if adapter else {}
    answer = await aliases_of(request).call(alias, "chat", prompt, **params)
    return PlainTextResponse(answer.text)


@router.get("/{alias}/chat")
async def chat_get(alias: str, request: Request, prompt: str = Query(min_length=1),
                   adapter_name: str | None = Query(default=None),
                   grant: Grant = Depends(grant_of)) -> PlainTextResponse:
    """Seed 003: ``GET /<alias>/chat?prompt=...`` -> text/plain (``adapter_name``: a LoRA adapter, seed 000)."""
    grant.require(alias)
    return await _plain(alias, prompt, request, adapter_name)


@router.post("/{alias}/chat")
async def chat_post(alias: str, body: PromptBody, request: Request,
                    grant: Grant = Depends(grant_of)) -> PlainTextResponse:
    """Seed 003: ``POST /<alias>/chat`` ``{"prompt"}`` -> text/plain."""
    grant.require(alias)
    return await _plain(alias, body.prompt, request, body.adapter_name)
