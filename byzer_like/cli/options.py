"""Options shared by several commands, in byzerllm's underscore spelling and the dashed one."""

from __future__ import annotations

from typing import Any, Callable

import click

from byzer_like.cluster import ClusterInfo, connect


def ray_address_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ray_address`` / ``--ray-address`` (default ``auto``)."""
    return click.option("--ray_address", "--ray-address", "ray_address", default="auto", show_default=True,
                        help="Ray cluster: auto (RAY_ADDRESS, else the local cluster), or host:port.")(func)


def alias_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """An alias given as an argument or as byzerllm's ``--model``."""
    func = click.argument("alias_arg", metavar="ALIAS", required=False)(func)
    return click.option("--model", "model_opt", metavar="ALIAS", help="The alias (byzerllm's spelling).")(func)


def pick_alias(alias_arg: str | None, model_opt: str | None) -> str:
    """The alias from the argument or ``--model``; a usage error (exit 2) when neither or both differ."""
    if alias_arg and model_opt and alias_arg != model_opt:
        raise click.UsageError(f"two aliases given ('{alias_arg}' and --model '{model_opt}'); give one")
    alias = alias_arg or model_opt
    if not alias:
        raise click.UsageError("give the alias, as ALIAS or --model ALIAS")
    return alias


def connect_cli(address: str, *, start: bool = False) -> ClusterInfo:
    """Connect for a CLI command, announcing an embedded cluster on stderr."""
    return connect(address, start=start, say=lambda text: click.echo(text, err=True))
