"""Tools, JSON mode and structured outputs on local engines, constrained (never hoped for): SmolLM2-135M on
llama.cpp through the gateway with the real openai SDK and LangChain, and on transformers (xgrammar) through the
client; the CLI's ``--json-schema`` and TGI's ``grammar`` take the same path. vLLM's run is in test_vllm_engine.py
(it reuses that module's alias).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from _engine_models import prepared
from structured_checks import (
    PROMPTS,
    WEATHER,
    WEATHER_PARAMS,
    CityFacts,
    check_forced_tool_call,
    check_json_object_and_stream,
    check_json_schema_answers,
    check_langchain,
    check_tool_round_trip,
)

from byzer_like import Client, DeploySpec

pytestmark = pytest.mark.slow
LLAMA, TF = "st_llama", "st_tf"


@pytest.fixture(scope="module")
def llama_gateway(ray_cluster):
    from conftest import gateway_serving

    from byzer_like.pool import deploy, list_aliases, undeploy

    deploy(DeploySpec.model_validate({"alias": LLAMA, "backend": {"infer_backend": "llama_cpp"},
                                      "resources": {"num_workers": 2, "cpus_per_worker": 1}}), replace=True)
    with gateway_serving() as url:
        yield url
    if LLAMA in list_aliases():
        undeploy(LLAMA, force=True)


def test_llama_json_schema_20_of_20(llama_gateway):
    check_json_schema_answers(llama_gateway, LLAMA, PROMPTS)


def test_llama_json_object_and_forced_tools(llama_gateway):
    check_json_object_and_stream(llama_gateway, LLAMA)
    check_forced_tool_call(llama_gateway, LLAMA)


def test_llama_tool_round_trip(llama_gateway):
    check_tool_round_trip(llama_gateway, LLAMA)


def test_llama_langchain(llama_gateway):
    check_langchain(llama_gateway, LLAMA)


def test_llama_auto_is_text_or_a_valid_call(llama_gateway):
    """tool_choice auto: a grammar allows plain text or tagged calls; whichever comes, it is well formed."""
    answer = Client(LLAMA, timeout=300).chat("Call get_weather for Paris in celsius for 2 days.", tools=[WEATHER],
                                             max_tokens=200, temperature=0)
    if answer.tool_calls:
        assert answer.finish_reason == "tool_calls"
        jsonschema.validate(json.loads(answer.tool_calls[0].function.arguments), WEATHER_PARAMS)
    else:
        assert answer.text and answer.finish_reason in ("stop", "length")


def test_tgi_grammar_and_cli_json_schema(llama_gateway, cli, tmp_path):
    import text_generation

    schema = CityFacts.model_json_schema()
    tgi = text_generation.Client(f"{llama_gateway}/{LLAMA}", timeout=300)
    out = tgi.generate("A city, as JSON: ", max_new_tokens=300, grammar={"type": "json", "value": schema})
    jsonschema.validate(json.loads(out.generated_text), schema)
    path = tmp_path / "city.json"
    path.write_text(json.dumps(schema))
    done = cli("chat", LLAMA, "Describe Paris.", "--json-schema", str(path), "--max-tokens", "300")
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), schema)


def test_regex_is_a_400_on_llama_cpp(llama_gateway):
    import httpx

    resp = httpx.post(f"{llama_gateway}/{LLAMA}/generate", timeout=60, json={
        "inputs": "A phone number: ", "parameters": {"grammar": {"type": "regex", "value": "[0-9]{3}"}}})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "response_format"


def test_transformers_constrained_by_xgrammar(deployed):
    deployed(DeploySpec.model_validate({"alias": TF, "backend": {"infer_backend": "transformers",
                                                                  "model_path": prepared("smollm2-hf")}}))
    client = Client(TF, timeout=300)
    schema = CityFacts.model_json_schema()
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    for prompt in PROMPTS[:2]:
        answer = client.chat(prompt, response_format=fmt, max_tokens=400, temperature=0)
        assert answer.finish_reason == "stop"
        jsonschema.validate(json.loads(answer.text), schema)
    forced = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(client.stream("Weather in Oslo?", tools=[WEATHER], tool_choice=forced, max_tokens=200))
    pieces = [d for c in chunks for d in c.tool_calls or []]
    assert pieces[0].name == "get_weather" and chunks[-1].finish_reason == "tool_calls"
    jsonschema.validate(json.loads("".join(p.arguments for p in pieces)), WEATHER_PARAMS)
    regex = client.chat("A phone number:", response_format={"type": "regex", "regex": "[0-9]{3}-[0-9]{4}"},
                        max_tokens=20)
    assert len(regex.text) == 8 and regex.text[3] == "-" and regex.text.replace("-", "").isdigit()
