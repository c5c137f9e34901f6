"""``chat`` (streams to the terminal) and byzerllm's ``query``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from byzer_like.cli.options import connect_cli, ray_address_option


def _messages(text: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def _params(max_tokens: int | None, temperature: float | None, adapter: str | None) -> dict[str, Any]:
    given = {"max_tokens": max_tokens, "temperature": temperature, "adapter": adapter}
    return {k: v for k, v in given.items() if v is not None}


def _sampling_options(func: Any) -> Any:
    func = click.option("--system", help="A system prompt.")(func)
    func = click.option("--max-tokens", "--max_tokens", "max_tokens", type=int, help="Most tokens to generate.")(func)
    func = click.option("--temperature", type=float, help="Sampling temperature.")(func)
    func = click.option("--adapter", metavar="NAME", help="Answer with this LoRA adapter of the alias.")(func)
    return click.option("--timeout", type=float, help="Give up after this many seconds.")(func)


def _schema_format(path: str) -> dict[str, Any]:
    """``response_format`` for a schema file (strict: the answer must validate)."""
    try:
        schema = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read a JSON schema from '{path}': {exc}",
                                 param_hint="--json-schema") from None
    if not isinstance(schema, dict):
        raise click.BadParameter(f"'{path}' holds no JSON schema object", param_hint="--json-schema")
    return {"type": "json_schema", "json_schema": {"name": Path(path).stem, "schema": schema, "strict": True}}


@click.command()
@click.argument("alias")
@click.argument("text")
@_sampling_options
@click.option("--no-stream", is_flag=True, help="Print the answer when complete instead of streaming it.")
@click.option("--json-schema", "json_schema", type=click.Path(exists=True, dir_okay=False),
              help="A JSON schema file: the answer is JSON valid against it (response_format json_schema, strict).")
@ray_address_option
def chat(alias: str, text: str, system: str | None, max_tokens: int | None, temperature: float | None,
         adapter: str | None, timeout: float | None, no_stream: bool, json_schema: str | None,
         ray_address: str) -> None:
    """Chat with ALIAS; the answer streams to the terminal."""
    from byzer_like.client import Client

    connect_cli(ray_address)
    client = Client(alias, timeout=timeout)
    messages, params = _messages(text, system), _params(max_tokens, temperature, adapter)
    if json_schema:
        params["response_format"] = _schema_format(json_schema)
    if no_stream:
        click.echo(client.chat(messages, **params).text)
        return
    with client.stream(messages, **params) as stream:
        for chunk in stream:
            click.echo(chunk.text, nl=False)
    click.echo()


@click.command()
@click.option("--model", "alias", required=True, metavar="ALIAS", help="The alias to ask.")
@click.option("--query", "text", required=True, help="The question.")
@_sampling_options
@ray_address_option
def query(alias: str, text: str, system: str | None, max_tokens: int | None, temperature: float | None,
          adapter: str | None, timeout: float | None, ray_address: str) -> None:
    """Chat the byzerllm way: ``query --model ALIAS --query TEXT`` prints the whole answer."""
    from byzer_like.client import Client

    connect_cli(ray_address)
    params = _params(max_tokens, temperature, adapter)
    click.echo(Client(alias, timeout=timeout).chat(_messages(text, system), **params).text)


COMMANDS = [chat, query]
