"""Structured output and tool checks through the gateway with the real ``openai`` SDK and LangChain's ChatOpenAI.

No check relies on what a tiny model says: answers are validated against their JSON schema, tool calls against
the tool's parameter schema, and round trips by their structure.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import jsonschema
from pydantic import BaseModel, Field

PROMPTS = [f"Describe the city of {city} as JSON." for city in (
    "Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Rome", "Delhi", "Quito", "Seoul", "Dakar",
    "Hanoi", "Berlin", "Sydney", "Nairobi", "Toronto", "Madrid", "Bogota", "Lagos", "Prague", "Manila")]


class CityFacts(BaseModel):
    """A city, as the model describes it."""

    name: str
    country: str
    population_millions: float
    capital: bool
    climate: Literal["hot", "mild", "cold"]
    landmarks: list[str] = Field(max_length=3)


WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                                   "days": {"type": "integer"}},
                  "required": ["city", "unit", "days"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city.",
                                            "parameters": WEATHER_PARAMS, "strict": True}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The local time in a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


def openai_client(base_url: str):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def check_json_schema_answers(base_url: str, alias: str, prompts: list[str] = PROMPTS, workers: int = 2) -> None:
    """``chat.completions.parse`` with a pydantic model (strict json_schema): every answer parses and validates."""
    oai = openai_client(base_url)
    schema = CityFacts.model_json_schema()

    def ask(prompt: str) -> CityFacts:
        resp = oai.chat.completions.parse(model=alias, messages=[{"role": "user", "content": prompt}],
                                          response_format=CityFacts, max_tokens=400, temperature=0.7)
        choice = resp.choices[0]
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), schema)
        return choice.message.parsed

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(ask, prompts))
    assert len(answers) == len(prompts) and all(isinstance(a, CityFacts) for a in answers)


def check_json_object_and_stream(base_url: str, alias: str) -> None:
    """json_object answers are JSON objects, unary and streamed."""
    oai = openai_client(base_url)
    messages = [{"role": "user", "content": "Give a JSON object describing a cat."}]
    resp = oai.chat.completions.create(model=alias, messages=messages, max_tokens=300, temperature=0,
                                       response_format={"type": "json_object"})
    assert resp.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(resp.choices[0].message.content), dict)
    stream = oai.chat.completions.create(model=alias, messages=messages, max_tokens=300, temperature=0, stream=True,
                                         response_format={"type": "json_object"})
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)), dict)


def check_forced_tool_call(base_url: str, alias: str) -> None:
    """A named tool_choice gives one call of that tool with schema-valid arguments, unary and streamed."""
    oai = openai_client(base_url)
    messages = [{"role": "user", "content": "What will the weather be in Oslo for the next three days?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    resp = oai.chat.completions.create(model=alias, messages=messages, tools=[TIME, WEATHER], tool_choice=forced,
                                       max_tokens=200, temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)
    stream = list(oai.chat.completions.create(model=alias, messages=messages, tools=[TIME, WEATHER],
                                              tool_choice="required", max_tokens=200, temperature=0, stream=True))
    pieces = [d for c in stream if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function.name in ("get_weather", "get_time")  # id and name first
    args = "".join(p.function.arguments or "" for p in pieces)
    jsonschema.validate(json.loads(args), WEATHER_PARAMS if pieces[0].function.name == "get_weather"
                        else TIME["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "tool_calls"


def check_tool_round_trip(base_url: str, alias: str) -> None:
    """Call -> tool result -> final answer, with the openai SDK."""
    oai = openai_client(base_url)
    messages = [{"role": "user", "content": "What is the weather in Rome this weekend?"}]
    first = oai.chat.completions.create(model=alias, messages=messages, tools=[WEATHER], tool_choice="required",
                                        max_tokens=200, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": args["city"],
                                                                                  "forecast": "sunny, 24 C"})}]
    final = oai.chat.completions.create(model=alias, messages=messages, tools=[WEATHER], tool_choice="none",
                                        max_tokens=64, temperature=0)
    choice = final.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")
    assert isinstance(choice.message.content, str) and choice.message.content.strip()


def check_langchain(base_url: str, alias: str) -> None:
    """LangChain's ChatOpenAI: ``bind_tools`` (forced call, then a round trip) and ``with_structured_output``."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: Literal["celsius", "fahrenheit"], days: int) -> str:
        """Weather forecast for a city."""
        return json.dumps({"city": city, "unit": unit, "days": days, "forecast": "sunny"})

    llm = ChatOpenAI(model=alias, base_url=f"{base_url}/v1", api_key="unused", temperature=0, max_tokens=300,
                     max_retries=0, timeout=300)
    question = HumanMessage("What is the weather in Lima for two days?")
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
    assert len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "get_weather"
    jsonschema.validate(ai.tool_calls[0]["args"], get_weather.tool_call_schema.model_json_schema())
    result = get_weather.invoke(ai.tool_calls[0])
    assert isinstance(result, ToolMessage)
    final = llm.bind_tools([get_weather]).invoke([question, ai, result], tool_choice="none")
    assert not final.tool_calls and isinstance(final.content, str) and final.content.strip()
    for method in ("json_schema", "function_calling"):
        facts = llm.with_structured_output(CityFacts, method=method, strict=True).invoke("Describe Madrid.")
        assert isinstance(facts, CityFacts), method
