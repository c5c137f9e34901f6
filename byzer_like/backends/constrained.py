"""Tools and structured output on local engines: what to constrain decoding to, the prompt, and reading calls back.

Local engines do not hope the model follows a format; they constrain decoding (llama.cpp grammars, vLLM's
structured outputs, xgrammar for transformers). This module is engine-neutral: it turns a request into a
:class:`Constraint`, renders tools and tool history into plain chat messages any chat template can take, and turns
the constrained text back into tool calls (:class:`AnswerReader`).

The tool call format is Hermes/Qwen's: a call is ``{"name": <tool>, "arguments": {...}}``; when the model may
choose (``tool_choice: auto``) calls are wrapped in ``<tool_call>...</tool_call>`` and the answer is either plain
text or calls. A forced call (``required`` or a named tool) is the bare JSON object. Local engines make one call
per forced answer; ``auto`` may make several.

Example:
    >>> c = constraint_for(ChatRequest(messages=[{"role": "user", "content": "hi"}],
    ...                                response_format={"type": "json_object"}))
    >>> c.kind, c.schema
    ('json', {'type': 'object'})
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Literal

from byzer_like.errors import UnsupportedError
from byzer_like.protocol import ChatRequest, Chunk, CompletionRequest, FinishReason, Message
from byzer_like.structured import ToolCallDelta, ToolDef, new_call_id

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_HOLD = 64  # characters of a call's arguments held back until we know they are not the call's closing


@dataclass(frozen=True)
class Constraint:
    """What decoding must produce.

    Attributes:
        kind: ``json`` (text valid against ``schema``), ``regex``, ``calls`` (one bare call object valid against
            ``schema``) or ``text_or_calls`` (free text, or calls wrapped in tool_call tags).
        schema: The JSON schema (json: of the answer; calls: of one call object).
        regex: The pattern (regex).
        tools: The tools a call may name (calls, text_or_calls).
    """

    kind: Literal["json", "regex", "calls", "text_or_calls"]
    schema: dict[str, Any] | None = None
    regex: str | None = None
    tools: tuple[ToolDef, ...] = ()

    def tagged_structures(self) -> list[dict[str, Any]]:
        """One xgrammar/vLLM structural tag per tool: ``<tool_call>{"name": N, "arguments": <schema>}</tool_call>``."""
        return [{"begin": f'{TOOL_OPEN}{{"name": {json.dumps(t.function.name)}, "arguments": ',
                 "schema": t.function.parameters_schema(), "end": f"}}{TOOL_CLOSE}"} for t in self.tools]


def call_schema(tools: list[ToolDef]) -> dict[str, Any]:
    """JSON schema of one call object naming one of ``tools`` (name first, so it can be streamed first)."""
    options = [{"type": "object", "properties": {"name": {"const": t.function.name},
                                                 "arguments": t.function.parameters_schema()},
                "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_tools(req: ChatRequest) -> list[ToolDef]:
    """The tools a forced answer may call: the named one, or all of them for ``required``."""
    choice = req.tool_choice
    tools = list(req.tools or [])
    if isinstance(choice, str):
        return tools
    return [t for t in tools if t.function.name == choice.name]


def constraint_for(req: ChatRequest | CompletionRequest) -> Constraint | None:
    """The constraint a request asks for, or None for free text.

    Raises:
        UnsupportedError: ``response_format`` together with ``tool_choice: auto`` (a format for text answers
            beside optional calls is not something these engines can constrain to).
    """
    fmt = req.response_format
    if isinstance(req, ChatRequest) and req.uses_tools():
        if req.tool_choice in (None, "auto"):
            if fmt is not None and fmt.type != "text":
                raise UnsupportedError("local engines cannot combine response_format with tool_choice 'auto'; "
                                       "force a tool (tool_choice) or drop response_format", param="response_format")
            return Constraint("text_or_calls", schema=call_schema(list(req.tools or [])), tools=tuple(req.tools or []))
        tools = forced_tools(req)
        return Constraint("calls", schema=call_schema(tools), tools=tuple(tools))
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "regex":
        return Constraint("regex", regex=fmt.regex or "")
    return Constraint("json", schema=fmt.schema_dict())


# -- prompt ------------------------------------------------------------------------------------------------------
def prompt_messages(req: ChatRequest) -> list[dict[str, Any]] | None:
    """Messages with tools, tool calls and tool results rendered as text; None when the request has none of them.

    Tool definitions go into the system message (Hermes style), assistant calls become ``<tool_call>`` text and
    tool results become user turns wrapped in ``<tool_response>`` (so templates that only know user/assistant
    roles take them); a json_schema format adds the schema to the system message.
    """
    history = any(m.tool_calls or m.role == "tool" for m in req.messages)
    hint = _system_hint(req)
    if not history and not hint:
        return None
    out: list[dict[str, Any]] = []
    for message in req.messages:
        _append(out, _flat(message))
    if hint:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{hint}"}
        else:
            out.insert(0, {"role": "system", "content": hint})
    return out


def _flat(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.text()}\n</tool_response>"}
    text = message.text()
    for call in message.tool_calls or []:
        body = f'{{"name": {json.dumps(call.function.name)}, "arguments": {call.function.arguments or "{}"}}}'
        text += f"{TOOL_OPEN}\n{body}\n{TOOL_CLOSE}"
    return {"role": message.role, "content": text}


def _append(out: list[dict[str, Any]], message: dict[str, Any]) -> None:
    """Add a message; consecutive user turns (tool results) merge so roles keep alternating."""
    if out and out[-1]["role"] == message["role"] == "user":
        out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n{message['content']}"}
    else:
        out.append(message)


def _system_hint(req: ChatRequest) -> str:
    if req.uses_tools():
        return _tools_hint(req)
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        return f"Answer with JSON only, following this JSON schema:\n{json.dumps(fmt.schema_dict())}"
    if fmt is not None and fmt.type == "json_object":
        return "Answer with a JSON object only."
    return ""


def _tools_hint(req: ChatRequest) -> str:
    listing = "\n".join(json.dumps(t.model_dump(exclude_none=True)) for t in req.tools or [])
    head = f"You can call functions. Their signatures are within <tools></tools> tags:\n<tools>\n{listing}\n</tools>\n"
    call = '{"name": <function name>, "arguments": <arguments as a JSON object>}'
    choice = req.tool_choice
    if choice in (None, "auto"):
        return head + f"To call a function, answer with {TOOL_OPEN}{call}{TOOL_CLOSE}; otherwise answer normally."
    if isinstance(choice, str):
        return head + f"Call one of these functions now: answer with {call}."
    return head + f"Call the function {choice.name} now: answer with {call}."


# -- reading calls back ----------------------------------------------------------------------------------------
class AnswerReader:
    """Turns a constrained answer's text into text chunks and tool call pieces, as they stream.

    Args:
        constraint: The constraint the answer was generated under (``calls`` or ``text_or_calls``).
    """

    def __init__(self, constraint: Constraint) -> None:
        self.tagged = constraint.kind == "text_or_calls"
        self.in_call = not self.tagged
        self.named = self.args_sent = False
        self.pending = ""
        self.index = -1
        self.calls = 0

    def feed(self, text: str) -> list[Chunk]:
        """Take generated text; return what can be sent now."""
        self.pending += text
        out: list[Chunk] = []
        while True:
            chunk, progressed = self._call_step() if self.in_call else self._text_step()
            if chunk is not None:
                out.append(chunk)
            if not progressed:
                return out

    def finish(self, reason: FinishReason) -> tuple[list[Chunk], FinishReason]:
        """The rest of the answer at its end, and the finish reason (``tool_calls`` when calls completed)."""
        rest, self.pending = self.pending, ""
        out: list[Chunk] = []
        if self.in_call and self.named:
            args = rest if reason != "stop" else _strip_close(rest)
            args = args if self.args_sent else args.lstrip()
            out.append(Chunk(tool_calls=[ToolCallDelta(index=self.index, arguments=args)]))
            self.calls += reason == "stop"
        elif rest.strip() or (rest and not self.calls):
            out.append(Chunk(text=rest))
        return out, ("tool_calls" if self.calls and reason == "stop" else reason)

    def _text_step(self) -> tuple[Chunk | None, bool]:
        at = self.pending.find(TOOL_OPEN)
        if at >= 0:
            text, self.pending = self.pending[:at], self.pending[at + len(TOOL_OPEN):]
            self.in_call, self.named = True, False
            return (Chunk(text=text) if text.strip() else None), True
        keep = _prefix_overlap(self.pending, TOOL_OPEN)
        text = self.pending[:len(self.pending) - keep]
        if not text or (self.calls and not text.strip()):
            return None, False
        self.pending = self.pending[len(text):]
        return Chunk(text=text), False

    def _call_step(self) -> tuple[Chunk | None, bool]:
        if not self.named:
            match = _HEAD.match(self.pending)
            if match is None:
                return None, False
            self.named, self.args_sent = True, False
            self.index, self.pending = self.index + 1, self.pending[match.end():]
            name = json.loads(f'"{match.group(1)}"')
            return Chunk(tool_calls=[ToolCallDelta(index=self.index, id=new_call_id(), name=name)]), True
        if self.tagged and (end := self.pending.find(TOOL_CLOSE)) >= 0:
            args, self.pending = _strip_close(self.pending[:end]).lstrip(), self.pending[end + len(TOOL_CLOSE):]
            self.in_call, self.calls = False, self.calls + 1
            return Chunk(tool_calls=[ToolCallDelta(index=self.index, arguments=args)]), True
        self.pending = self.pending.lstrip() if not self.args_sent else self.pending
        cut = len(self.pending) - _HOLD
        if cut <= 0:
            return None, False
        args, self.pending, self.args_sent = self.pending[:cut], self.pending[cut:], True
        return Chunk(tool_calls=[ToolCallDelta(index=self.index, arguments=args)]), False


def _strip_close(text: str) -> str:
    """A call's arguments without the call object's own closing brace."""
    text = text.rstrip()
    return text[:-1].rstrip() if text.endswith("}") else text


def _prefix_overlap(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


async def read_answer(stream: AsyncIterator[Chunk], constraint: Constraint | None) -> AsyncIterator[Chunk]:
    """``stream`` with tool calls read out of its text (unchanged when the answer is not about tools)."""
    if constraint is None or constraint.kind not in ("calls", "text_or_calls"):
        async for chunk in stream:
            yield chunk
        return
    reader = AnswerReader(constraint)
    async for chunk in stream:
        for out in reader.feed(chunk.text):
            yield out
        if chunk.finish_reason is not None:
            rest, finish = reader.finish(chunk.finish_reason)
            for out in rest:
                yield out
            yield Chunk(finish_reason=finish, usage=chunk.usage)
