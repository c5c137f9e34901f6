"""``embed``: vectors for one or more texts from an embedding (or embedding-capable) alias."""

from __future__ import annotations

import json

import click

from byzer_like.cli.options import connect_cli, ray_address_option


@click.command()
@click.argument("alias")
@click.argument("texts", nargs=-1, required=True)
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: {\"embeddings\": [[...], ...]}.")
@ray_address_option
def embed(alias: str, texts: tuple[str, ...], timeout: float | None, as_json: bool, ray_address: str) -> None:
    """Embed TEXTS with ALIAS; prints one JSON vector per line, in input order.

    \b
    byzer-like embed emb "The cat sits on the mat." "A feline rests on a rug."
    """
    from byzer_like.client import Client

    connect_cli(ray_address)
    vectors = Client(alias, timeout=timeout).embed(list(texts))
    if as_json:
        click.echo(json.dumps({"embeddings": vectors}))
        return
    for vector in vectors:
        click.echo(json.dumps(vector))


COMMANDS = [embed]
