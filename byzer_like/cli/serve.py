"""``serve``: start the HTTP gateway (OpenAI, TGI, simple endpoints) on the cluster and return; ``--stop`` ends it."""

from __future__ import annotations

import click

from byzer_like.cli.options import connect_cli, ray_address_option


@click.command()
@click.option("--host", default=None, help="Interface to listen on [127.0.0.1; BYZER_LIKE_HOST].")
@click.option("--port", type=int, default=None, help="HTTP port [8000; BYZER_LIKE_PORT].")
@click.option("--replicas", type=click.IntRange(1, 256), default=None, help="Gateway replicas [1].")
@click.option("--api-key-env", "--api_key_env", "api_key_env", metavar="VAR",
              help="Environment variable holding the API keys (KEY or KEY=alias,alias; whitespace separated).")
@click.option("--api-key-file", "--api_key_file", "api_key_file", type=click.Path(dir_okay=False),
              help="File of API keys, one per line (KEY or KEY=alias,alias).")
@click.option("--api_key", "--api-key", "api_key", hidden=True,
              help="byzerllm's spelling: one key on the command line (visible in `ps`; prefer --api-key-env).")
@click.option("--request-timeout", "--request_timeout", "request_timeout", type=float, default=None,
              help="Seconds a non-streamed request may take before a 504.")
@click.option("--server", type=click.Choice(["uvicorn", "ray-serve"]), default=None,
              help="uvicorn [default]: one uvicorn server per node in a plain Ray actor (fewest hops); ray-serve: "
                   "Ray Serve's proxies and --replicas replicas (the default when --replicas is given). "
                   "See docs/gateway.md.")
@click.option("--stop", "stop_it", is_flag=True, help="Stop the running gateway.")
@ray_address_option
def serve(host: str | None, port: int | None, replicas: int | None, api_key_env: str | None,
          api_key_file: str | None, api_key: str | None, request_timeout: float | None, server: str,
          stop_it: bool, ray_address: str) -> None:
    """Serve every deployed alias over HTTP (OpenAI /v1/*, TGI /<alias>/generate, ...) and return."""
    from byzer_like.gateway import actor_server, serve_app
    from byzer_like.gateway.auth import KeyTable, load_keys
    from byzer_like.gateway.settings import GatewaySettings

    if server == "uvicorn" and replicas is not None:
        raise click.UsageError("--replicas applies to --server ray-serve; --server uvicorn runs one server per node")
    server = server or ("ray-serve" if replicas is not None else "uvicorn")
    connect_cli(ray_address)
    if stop_it:
        stopped = [serve_app.stop(), actor_server.stop_actors()]
        click.echo("gateway stopped" if any(stopped) else "no gateway was running")
        return
    keys = load_keys(api_key_env, api_key_file)
    if api_key:
        click.echo("warning: --api_key is visible to other users in `ps`; prefer --api-key-env", err=True)
        keys = KeyTable(hashes={**keys.hashes, **KeyTable.from_text(api_key).hashes})
    given = {"host": host, "port": port, "replicas": replicas, "request_timeout_s": request_timeout}
    settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    auth = f"{len(keys.hashes)} API key(s)" if keys.enabled else "no API key (open)"
    if server == "uvicorn":
        serve_address = serve_app.running_http_address()
        if not serve_app.stop():  # NOTE: one gateway at a time; the other kind may hold the port
            serve_address = None
        nodes, moved_from = actor_server.start_actors(settings, keys)
        if moved_from is None and serve_address is not None and serve_address != (settings.host, settings.port):
            moved_from = f"{serve_address[0]}:{serve_address[1]}"
        url = actor_server.url_of(settings)
        moved = f" (moved from {moved_from})" if moved_from else ""
        click.echo(f"gateway serving at {url}{moved} (uvicorn in a Ray actor on {len(nodes)} node(s), {auth}); "
                   f"OpenAI base_url {url}/v1; stop with `byzer-like serve --stop`")
        return
    actor_address = actor_server.running_address()
    actor_server.stop_actors()
    url, moved_from = serve_app.start(settings, keys)
    if moved_from is None and actor_address not in (None, f"{settings.host}:{settings.port}"):
        moved_from = actor_address
    moved = f" (moved from {moved_from})" if moved_from else ""
    click.echo(f"gateway serving at {url}{moved} ({settings.replicas} replica(s), {auth}); "
               f"OpenAI base_url {url}/v1; stop with `byzer-like serve --stop`")


COMMANDS = [serve]
