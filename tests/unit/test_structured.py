"""Tool calls read out of constrained text, streamed deltas merged and assembled, request validation."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from byzer_like.backends.constrained import AnswerReader, constraint_for, prompt_messages
from byzer_like.protocol import ChatRequest, Chunk, Coalescer, collect
from byzer_like.structured import ToolCallDelta

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ARGS = '{"city": "Paris, \\"the\\" capital"}'


def _read(kind_req: ChatRequest, text: str, finish: str = "stop", step: int = 1) -> tuple[list[Chunk], str]:
    reader = AnswerReader(constraint_for(kind_req))
    out = [c for i in range(0, len(text), step) for c in reader.feed(text[i:i + step])]
    rest, reason = reader.finish(finish)  # type: ignore[arg-type]
    return out + rest, reason


def _answer(chunks: list[Chunk], reason: str):
    async def gen():
        for chunk in chunks:
            yield chunk
        yield Chunk(finish_reason=reason)
    return asyncio.run(collect(gen()))


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_forced_call_streams_name_first_then_arguments(step):
    req = ChatRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice="required")
    chunks, reason = _read(req, f'{{ "name": "get_weather", "arguments": {ARGS} \n}}', step=step)
    assert reason == "tool_calls"
    assert chunks[0].tool_calls[0].name == "get_weather" and chunks[0].tool_calls[0].id.startswith("call_")
    answer = _answer(chunks, reason)
    assert answer.text == "" and answer.tool_calls[0].function.arguments == ARGS


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_auto_reads_text_or_tagged_calls(step):
    req = ChatRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER])
    text_only, reason = _read(req, "Hello <b>there</b>", step=step)
    assert _answer(text_only, reason).text == "Hello <b>there</b>" and reason == "stop"
    two = f'<tool_call>{{"name": "get_weather", "arguments": {ARGS}}}</tool_call>\n<tool_call>' \
          f'{{"name": "get_weather", "arguments": {{}}}}</tool_call>'
    chunks, reason = _read(req, two, step=step)
    answer = _answer(chunks, reason)
    assert reason == "tool_calls" and answer.text == ""
    assert [c.function.arguments for c in answer.tool_calls] == [ARGS, "{}"]


def test_a_cut_call_keeps_length_and_partial_arguments():
    req = ChatRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice="required")
    chunks, reason = _read(req, '{"name": "get_weather", "arguments": {"city": "Par', finish="length")
    assert reason == "length" and _answer(chunks, reason).tool_calls[0].function.arguments == '{"city": "Par'


def test_coalescer_merges_tool_call_pieces():
    coalescer = Coalescer(10)
    first = coalescer.feed(Chunk(tool_calls=[ToolCallDelta(index=0, id="c1", name="f")]))
    assert first is not None
    for piece in ('{"a"', ": 1}"):
        assert coalescer.feed(Chunk(tool_calls=[ToolCallDelta(index=0, arguments=piece)])) is None
    merged = coalescer.flush()
    assert [d.arguments for d in merged.tool_calls] == ['{"a": 1}']


def test_request_validation_and_prompt():
    with pytest.raises(ValidationError, match="tool_choice"):
        ChatRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER],
                    tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValidationError, match="tool_choice"):
        ChatRequest(messages=[{"role": "user", "content": "x"}], tool_choice="required")
    plain = ChatRequest(messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice="none")
    assert constraint_for(plain) is None and prompt_messages(plain) is None and plain.structured_params() == set()
    history = ChatRequest(messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": ARGS}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], tools=[WEATHER])
    rendered = prompt_messages(history)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert "get_weather" in rendered[0]["content"] and "<tool_response>\nsunny" in rendered[3]["content"]
    body = rendered[2]["content"].removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    assert json.loads(body) == {"name": "get_weather", "arguments": json.loads(ARGS)}
