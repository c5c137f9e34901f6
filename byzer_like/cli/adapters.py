"""``adapters add / remove / list``: LoRA adapters hot-loaded on a live alias."""

from __future__ import annotations

import json

import click

from byzer_like.cli.options import connect_cli, ray_address_option


@click.group()
def adapters() -> None:
    """LoRA adapters of a live alias: add, remove, list (requests pick one with --adapter / model ALIAS:NAME)."""


@adapters.command()
@click.argument("alias")
@click.argument("name")
@click.argument("source")
@click.option("--scale", type=click.FloatRange(0, 16, min_open=True), default=1.0, show_default=True,
              help="Strength the adapter is applied with.")
@ray_address_option
def add(alias: str, name: str, source: str, scale: float, ray_address: str) -> None:
    """Load adapter NAME from SOURCE on every worker of ALIAS (a PEFT folder, a GGUF LoRA, or an http(s) URL)."""
    from byzer_like.client import Client

    connect_cli(ray_address)
    entry = Client(alias).add_adapter(name, source, scale=scale)
    click.echo(f"Added adapter '{name}' to '{alias}' ({entry.get('kind', 'adapter')} from {entry['source']}); "
               f"use it with `byzer-like chat {alias} --adapter {name} ...` or model '{alias}:{name}'.")


@adapters.command()
@click.argument("alias")
@click.argument("name")
@ray_address_option
def remove(alias: str, name: str, ray_address: str) -> None:
    """Unload adapter NAME from ALIAS once the requests using it have finished."""
    from byzer_like.client import Client

    connect_cli(ray_address)
    Client(alias).remove_adapter(name)
    click.echo(f"Removed adapter '{name}' from '{alias}'.")


@adapters.command(name="list")
@click.argument("alias")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@ray_address_option
def list_cmd(alias: str, as_json: bool, ray_address: str) -> None:
    """List ALIAS's adapters with their source, phase and requests."""
    from byzer_like.client import Client

    connect_cli(ray_address)
    rows = Client(alias).adapters()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"'{alias}' has no adapters.")
        return
    click.echo(f"{'NAME':<24}{'PHASE':<10}{'REQUESTS':>9}{'RUNNING':>8}{'SCALE':>7}  SOURCE")
    for row in rows:
        click.echo(f"{row['name']:<24}{row['phase']:<10}{row['requests']:>9}{row['running']:>8}{row['scale']:>7g}  "
                   f"{row['source']}")


COMMANDS = [adapters]
