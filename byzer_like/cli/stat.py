"""``stat``: per-worker numbers of an alias, as byzerllm's JSON (``--json``) or a readable table."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from byzer_like.cli.options import alias_argument, connect_cli, pick_alias, ray_address_option


def render_table(stat: dict[str, Any]) -> str:
    """A readable view of the stat JSON."""
    head = (f"{stat['alias']} ({stat['backend']}): {stat['total_workers']} workers, {stat['busy_workers']} busy, "
            f"{stat['idle_workers']} idle; {stat['worker_max_concurrency']} slots each; "
            f"queue {stat['queue_length']}; strategy {stat['load_balance_strategy']}")
    pool = (f"pool {stat['status']} (deploy {stat.get('deploy_phase', 'ready')}): {stat['current_workers']} workers "
            f"(min {stat['min_workers']}, max "
            f"{stat['max_workers']}); {stat['retries']} retries, {stat['total_restarts']} restarts"
            + (f"; last error: {stat['last_error']}" if stat.get("last_error") else ""))
    lines = [head, pool, f"{'WORKER':>6} {'PHASE':>8} {'FREE':>5} {'RUNNING':>8} {'REQUESTS':>9} {'ERRORS':>7} "
                         f"{'LAST WORK':>10} {'P50 MS':>8} {'P90 MS':>8} {'P99 MS':>8} {'TOKENS':>8} {'TOK/S':>7} "
                         f"{'RESTARTS':>8}  HEALTHY"]
    for i in range(stat["total_workers"]):
        lat = stat["latency_ms"][i]
        cells = [_ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"])]
        lines.append(f"{stat['worker_index'][i]:>6} {stat['phase'][i]:>8} {stat['state'][i]:>5} "
                     f"{stat['running_requests'][i]:>8} {stat['total_requests'][i]:>9} "
                     f"{stat['errors'][i]:>7} {stat['workers_last_work_time'][i]:>10} "
                     f"{cells[0]:>8} {cells[1]:>8} {cells[2]:>8} {stat['completion_tokens'][i]:>8} "
                     f"{stat['tokens_per_s'][i]:>7} {stat['restarts'][i]:>8}  {'yes' if stat['healthy'][i] else 'NO'}")
    if (up := stat.get("saas")) is not None:
        after = up["last_retry_after_s"]
        lines.append(f"  upstream: {up['requests']} requests, {up['errors']} errors, {up['retries']} retries, "
                     f"{up['rate_limited']} rate limited"
                     + (f" (last Retry-After {after:g}s)" if after is not None else ""))
    for a in stat.get("adapters", []):
        lines.append(f"  adapter {a['name']} ({a['phase']}): {a['requests']} requests, {a['running']} running, "
                     f"{a['errors']} errors")
    for event in stat.get("events", [])[-3:]:
        when = time.strftime("%H:%M:%S", time.localtime(event["time"]))
        lines.append(f"  {when} workers {event['from']} -> {event['to']}: {event['why']}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@click.command()
@alias_argument
@click.option("--json", "as_json", is_flag=True, help="Print clean JSON (byzerllm's keys and more).")
@click.option("--interval", type=float, default=0, help="Repeat every N seconds until Ctrl-C.")
@ray_address_option
def stat(alias_arg: str | None, model_opt: str | None, as_json: bool, interval: float, ray_address: str) -> None:
    """Show ALIAS's workers: free slots, running, requests, errors, last work, latency."""
    from byzer_like.client import Client

    alias = pick_alias(alias_arg, model_opt)
    connect_cli(ray_address)
    client = Client(alias)
    while True:
        data = client.stat()
        click.echo(json.dumps(data, indent=2) if as_json else render_table(data))
        if interval <= 0:
            return
        time.sleep(interval)
        if not as_json:
            click.echo()


COMMANDS = [stat]
