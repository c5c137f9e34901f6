"""``presets``: the one-line SaaS deployments ``byzer-like deploy <preset>`` knows."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from byzer_like.saas.presets import PRESETS


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def presets(as_json: bool) -> None:
    """List presets: byzer-like deploy PRESET --token-env VAR --alias A [--base_url U]."""
    if as_json:
        click.echo(json.dumps({name: asdict(p) for name, p in sorted(PRESETS.items())}, indent=2))
        return
    click.echo(f"{'PRESET':<26}{'TYPE':<22}{'MODEL':<30}{'KEY ENV':<22}BASE URL")
    for name, p in sorted(PRESETS.items()):
        click.echo(f"{name:<26}{p.model_type:<22}{p.model:<30}{p.key_env:<22}{p.base_url or '(provider default)'}")


COMMANDS = [presets]
