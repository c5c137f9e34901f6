"""``cluster status`` and ``cluster stop``."""

from __future__ import annotations

import json

import click

from byzer_like.cli.options import connect_cli, ray_address_option


@click.group()
def cluster() -> None:
    """The Ray cluster byzer-like runs on."""


@cluster.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@ray_address_option
def status(as_json: bool, ray_address: str) -> None:
    """Address, dashboard URL, nodes with their metrics addresses, and deployments."""
    from byzer_like.cluster import status as cluster_status

    connect_cli(ray_address)
    data = cluster_status()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"address:     {data['address']}\ndashboard:   {data['dashboard_url'] or '-'}")
    for node in data["nodes"]:
        res = ", ".join(f"{k}={v:g}" for k, v in sorted(node["resources"].items()) if "memory" not in k)
        click.echo(f"node:        {node['address']} {'alive' if node['alive'] else 'DEAD'} ({res})")
        if node["alive"] and node["metrics_url"]:
            click.echo(f"  metrics:   {node['metrics_url']} (Prometheus; byzer-like series: ray_byzer_like_*)")
    click.echo(f"deployments: {', '.join(data['deployments']) or '-'}")


@cluster.command()
@ray_address_option
def stop(ray_address: str) -> None:
    """Stop the local Ray cluster (its processes on this machine only) and every deployment on it."""
    from byzer_like.cluster import stop_connected_cluster

    info = connect_cli(ray_address)
    count = stop_connected_cluster()
    click.echo(f"Stopped the Ray cluster at {info.address} ({count} processes).")


COMMANDS = [cluster]
