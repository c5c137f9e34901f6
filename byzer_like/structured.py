"""Tools, tool calls and response formats: the one representation every layer passes through (OpenAI's shapes).

A request carries ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` / ``response_format``; an answer carries
complete :class:`ToolCall` objects and a stream carries :class:`ToolCallDelta` pieces: the first piece of a call
has its ``id`` and ``name``, later pieces add ``arguments`` text (as OpenAI streams them).

Example:
    >>> fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "p", "schema": {}}})
    >>> fmt.schema_dict()
    {}
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FunctionDef(BaseModel):
    """A function the model may call: its name, description and JSON-schema parameters."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$", description="The function's name.")
    description: str | None = Field(default=None, description="What the function does (shown to the model).")
    parameters: dict[str, Any] | None = Field(default=None, description="JSON schema of the arguments object.")
    strict: bool | None = Field(default=None, description="Arguments must validate against the schema.")

    def parameters_schema(self) -> dict[str, Any]:
        """The arguments' schema; no schema means "any JSON object"."""
        return self.parameters or {"type": "object"}


class ToolDef(BaseModel):
    """One tool (only functions exist)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: call exactly this tool."""

    type: Literal["function"] = "function"
    function: dict[str, str] = Field(description="{'name': <the tool's name>}")

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.function.get("name", "")


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """A call's function name and its arguments as a JSON text (OpenAI keeps them as text)."""

    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """A complete tool call made by the model."""

    id: str = Field(default_factory=lambda: new_call_id())
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: ``id``/``name`` on its first piece, ``arguments`` text on any."""

    index: int = Field(ge=0, description="Which call of the answer this piece belongs to.")
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def openai(self) -> dict[str, Any]:
        """This piece as an OpenAI ``delta.tool_calls`` item."""
        function: dict[str, Any] = {"arguments": self.arguments}
        out: dict[str, Any] = {"index": self.index, "function": function}
        if self.id is not None:
            out.update(id=self.id, type="function")
        if self.name is not None:
            function["name"] = self.name
        return out


class JsonSchemaSpec(BaseModel):
    """``response_format.json_schema``: a named schema, optionally strict."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(default="response", description="The schema's name.")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="The JSON schema.")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """What the answer's text must be: free ``text``, any JSON object, JSON valid against a schema, or a regex.

    ``regex`` is not OpenAI's; it carries TGI's ``grammar: {"type": "regex"}``.
    """

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema", "regex"] = "text"
    json_schema: JsonSchemaSpec | None = None
    regex: str | None = Field(default=None, description="Pattern the whole answer must match (type regex).")

    def schema_dict(self) -> dict[str, Any] | None:
        """The JSON schema the answer must satisfy (``{}`` = any JSON value, None = not JSON)."""
        if self.type == "json_schema":
            return (self.json_schema.schema_ if self.json_schema else None) or {}
        return {"type": "object"} if self.type == "json_object" else None

    def openai(self) -> dict[str, Any]:
        """OpenAI's wire shape (``schema``, not ``schema_``)."""
        return self.model_dump(by_alias=True, exclude_none=True)


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def merge_deltas(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Join consecutive pieces of the same call (a later piece without id/name extends the one before)."""
    out: list[ToolCallDelta] = []
    for delta in deltas:
        last = out[-1] if out else None
        if last is not None and last.index == delta.index and delta.id is None and delta.name is None:
            out[-1] = last.model_copy(update={"arguments": last.arguments + delta.arguments})
        else:
            out.append(delta)
    return out


def assemble(deltas: list[ToolCallDelta]) -> list[ToolCall]:
    """Complete calls from all the pieces of a stream, in index order."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = delta.id or call["id"]
        call["name"] = delta.name or call["name"]
        call["arguments"] += delta.arguments
    return [ToolCall(id=c["id"] or new_call_id(), function=FunctionCall(name=c["name"], arguments=c["arguments"]))
            for _, c in sorted(calls.items())]
