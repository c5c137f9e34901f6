"""The ``byzer-like`` command group and its single error mapping: one line on stderr, exit 2 for bad input."""

from __future__ import annotations

import sys
from typing import Any

import click

from byzer_like.errors import ByzerLikeError


class ByzerGroup(click.Group):
    """A click group that turns our errors into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, mapping ``ByzerLikeError`` once."""
        try:
            return super().invoke(ctx)
        except ByzerLikeError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=ByzerGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="byzer-like")
def main() -> None:
    """Deploy models under an alias on Ray, and talk to them: deploy, chat, stat, undeploy."""


def register() -> None:
    """Attach every subcommand (imported here so ``byzer_like.cli.main`` stays import-light)."""
    from byzer_like.cli import adapters, chat, cluster, deploy, embed, models, serve, stat

    for module in (deploy, chat, stat, cluster, embed, models, serve, adapters):
        for command in module.COMMANDS:
            main.add_command(command)


register()
