"""``deploy``, ``undeploy`` and ``list``."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from byzer_like.cli.options import alias_argument, connect_cli, pick_alias, ray_address_option
from byzer_like.cli.presets import presets
from byzer_like.errors import InvalidSpecError
from byzer_like.specfile import load_spec_file, spec_from_flags, spec_from_mapping

_INFER_FLAGS = ("--infer_params", "--infer-params")


def expand_infer_params(args: list[str]) -> list[str]:
    """Byzerllm writes ``--infer_params a=1 b=2 --model x``; click wants ``--infer_params a=1 --infer_params b=2``."""
    out: list[str] = []
    collecting = False
    for token in args:
        if token in _INFER_FLAGS:
            collecting = True
            continue
        if collecting and token.startswith("-"):
            collecting = False
        out.extend(["--infer_params", token] if collecting else [token])
    return out


class InferParamsCommand(click.Command):
    """A command that accepts byzerllm's space-separated ``--infer_params`` list."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Rewrite the ``--infer_params`` list before click parses it."""
        return super().parse_args(ctx, expand_infer_params(args))


def _flag(*names: str, **kwargs: Any) -> Any:
    """An option spelled byzerllm's way (underscores) and the dashed way."""
    dest = names[0].lstrip("-")
    dashed = names[0].replace("_", "-")
    spellings = [names[0], dashed] if dashed != names[0] else [names[0]]
    return click.option(*spellings, *names[1:], dest, **kwargs)


def saas_key_options(func: Any) -> Any:
    """``--token``, ``--token-env``, ``--token-file`` and ``--base_url`` for SaaS deployments and presets."""
    func = _flag("--base_url", metavar="URL", help="SaaS API root (same as saas.base_url; overrides a preset's).")(func)
    func = _flag("--token_file", metavar="PATH",
                 help="Read the key from this file inside each worker (the key never leaves that node).")(func)
    func = _flag("--token_env", metavar="VAR", help="Read the key from environment variable VAR here.")(func)
    return _flag("--token", metavar="KEY", help="The key itself (prefer --token-env or --token-file).")(func)


def apply_saas_flags(preset: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Fold a preset and the key/base-URL flags into the ordinary deploy flags (``saas.*`` infer params).

    Keys are never put in a message; ``${VAR}`` / ``ENV {{VAR}}`` references in infer params are rendered here.

    Raises:
        InvalidSpecError: for an unknown preset or an unset ``--token-env`` variable.
    """
    from byzer_like.saas.presets import preset_flags
    from byzer_like.specfile import render_env

    token, token_env, token_file, base_url = (flags.pop(k) for k in ("token", "token_env", "token_file", "base_url"))
    params = list(render_env(list(flags.get("infer_params") or ()), os.environ))
    if preset:
        defaults = preset_flags(preset, base_url)
        params = list(defaults.pop("infer_params")) + params  # type: ignore[call-overload]
        flags = {**defaults, **{k: v for k, v in flags.items() if v is not None}}
        flags["model"] = flags.get("model") or preset
    elif base_url:
        params.append(f"saas.base_url={base_url}")
    if token_env:
        if not os.environ.get(token_env):
            raise InvalidSpecError(f"environment variable {token_env} (from --token-env) is not set or empty; "
                                   f"export {token_env}=... first", param="token_env")
        params.append(f"saas.api_key={os.environ[token_env]}")
    if token:
        params.append(f"saas.api_key={token}")
    if token_file:
        params.append(f"saas.api_key_file={os.path.abspath(os.path.expanduser(token_file))}")
    flags["infer_params"] = tuple(params)
    return flags


@click.command(cls=InferParamsCommand)
@click.argument("preset", required=False)
@_flag("--model", "--alias", metavar="ALIAS", help="Unique name of the deployment.")
@_flag("--pretrained_model_type", help="custom/auto (local engine), custom/echo, or saas/<provider>.")
@_flag("--infer_backend", help="llama_cpp, vllm or transformers (local models).")
@_flag("--model_path", help="GGUF file or model folder, file:// or http(s):// URL (file or .tar/.tar.gz/.zip), "
                            "nas://... (BYZER_LIKE_MOUNTS); default: the bundled SmolLM2 (llama_cpp).")
@_flag("--model_sha256", metavar="HEX", help="Expected SHA-256 of a downloaded model file or archive.")
@_flag("--num_workers", type=int, help="Workers in the pool [1].")
@_flag("--worker_concurrency", type=int, help="Requests per worker at once [backend default].")
@_flag("--cpus_per_worker", type=float, help="CPUs per worker [backend default; llama.cpp threads follow it].")
@_flag("--gpus_per_worker", type=float, help="GPUs per worker [0].")
@_flag("--infer_params", multiple=True, metavar="K=V ...", help="Engine/provider options, byzerllm style.")
@_flag("--adapters", "--adapter", multiple=True, metavar="NAME=SOURCE",
       help="LoRA adapter to load on every worker (repeat for more): PEFT folder, GGUF LoRA, or URL.")
@_flag("--resources", multiple=True, metavar="NAME=N", help="Custom Ray resources per worker.")
@_flag("--max_queue", type=int, help="Requests that may wait when all slots are busy [256].")
@_flag("--max_queue_size", type=int, help="Same as --max_queue (seed 003's name).")
@_flag("--request_timeout", type=float, help="Longest wait in the queue, seconds [600].")
@_flag("--min_workers", type=int, help="Autoscaling: fewest workers; 0 = scale to zero when idle [num_workers].")
@_flag("--max_workers", type=int, help="Autoscaling: most workers [num_workers].")
@_flag("--scale_up_step", type=int, help="Autoscaling: workers added at once [1].")
@_flag("--max_idle_time", type=float, help="Autoscaling: seconds idle before a worker is removed [300].")
@_flag("--target_ongoing_requests", type=float, help="Autoscaling: running+queued per worker [worker_concurrency].")
@_flag("--upscale_delay", type=float, help="Autoscaling: seconds of high load before adding [0].")
@_flag("--downscale_delay", type=float, help="Autoscaling: seconds after a scale-up before removing [0].")
@_flag("--max_retries", type=int, help="Retries of a request whose worker died [2].")
@_flag("--health_check_period", type=float, help="Seconds between worker health checks [5].")
@_flag("--max_restarts", type=int, help="Worker replacements per 5 minutes before the alias is degraded [5].")
@_flag("--deploy_timeout", type=float, help="Longest wait for the workers to load, seconds [900].")
@_flag("--file", "-f", type=click.Path(dir_okay=False), help="YAML spec (flag names as keys; ENV {{VAR}} refs).")
@click.option("--replace", is_flag=True, help="Replace an existing deployment of the same alias.")
@click.option("--async", "async_", is_flag=True,
              help="Return at once with a deployment id; `byzer-like status ID --wait` follows it.")
@saas_key_options
@ray_address_option
def deploy(preset: str | None, file: str | None, replace: bool, async_: bool, ray_address: str,
           **flags: Any) -> None:
    """Deploy a model under an alias as a pool of Ray workers behind an LRU router.

    \b
    byzer-like deploy --model smol_chat --infer_backend llama_cpp --num_workers 2
    byzer-like deploy --pretrained_model_type custom/auto --infer_backend llama_cpp \\
        --model_path model.gguf --cpus_per_worker 1 --num_workers 2 --infer_params n_ctx=2048 --model smol_chat
    byzer-like deploy deepseek-chat --token-env DEEPSEEK_API_KEY --alias deepseek_chat   (see `byzer-like presets`)
    """
    flags = apply_saas_flags(preset, flags)
    flags["resources"] = {k: float(v) for k, v in (r.split("=", 1) for r in flags["resources"])} or None
    if file:
        spec = spec_from_mapping(load_spec_file(file, os.environ), flags)
    else:
        if not flags.get("model"):
            raise click.UsageError("give the alias with --model ALIAS (or a spec file with --file)")
        spec = spec_from_flags(flags)
    from byzer_like.backends.registry import resolve_spec
    from byzer_like.pool import deploy as deploy_spec

    resolve_spec(spec)  # NOTE: fail on a bad spec before touching (or starting) a cluster.
    connect_cli(ray_address, start=True)
    start = time.perf_counter()
    handle = deploy_spec(spec, replace=replace, wait=False)
    if async_:
        click.echo(f"Deploying '{spec.alias}' ({handle.spec.backend.registry_key}) in the background: {handle.id}; "
                   f"`byzer-like status {handle.id} --wait` follows it.")
        return
    done = handle.wait(on_status=ProgressLine())
    res = done.resources
    click.echo(f"Deployed '{done.alias}' ({done.backend.registry_key}): {done.initial_workers} workers x "
               f"{done.worker_concurrency} slots, {res.cpus_per_worker:g} CPU / {res.gpus_per_worker:g} GPU each, "
               f"in {time.perf_counter() - start:.1f}s.")


@click.command()
@alias_argument
@click.option("--force", is_flag=True, help="Kill at once, and clean up leftovers of a broken deployment.")
@ray_address_option
def undeploy(alias_arg: str | None, model_opt: str | None, force: bool, ray_address: str) -> None:
    """Remove a deployment: its router and every worker."""
    from byzer_like.pool import undeploy as undeploy_alias

    alias = pick_alias(alias_arg, model_opt)
    connect_cli(ray_address)
    undeploy_alias(alias, force=force)
    click.echo(f"Undeployed '{alias}'.")


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@ray_address_option
def list_cmd(as_json: bool, ray_address: str) -> None:
    """List deployed aliases."""
    from byzer_like.pool import list_deployments

    connect_cli(ray_address)
    rows = list_deployments()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No deployments.")
        return
    click.echo(f"{'ALIAS':<24}{'PHASE':<12}{'BACKEND':<20}{'WORKERS':>8}{'SLOTS':>7}  MODEL")
    for row in rows:
        click.echo(f"{row['alias']:<24}{row['phase']:<12}{row['backend']:<20}{row['num_workers']:>8}"
                   f"{row['worker_concurrency']:>7}  {row['model_path'] or ''}")


@click.command()
@click.argument("alias")
@click.option("--workers", type=click.IntRange(0, 1024), required=True, help="The worker count to move to now.")
@ray_address_option
def scale(alias: str, workers: int, ray_address: str) -> None:
    """Scale ALIAS to N workers now (min/max workers move when N lies outside them)."""
    from byzer_like.pool import scale as scale_alias

    connect_cli(ray_address)
    done = scale_alias(alias, workers)
    click.echo(f"Scaling '{alias}' to {workers} workers (min {done['min_workers']}, max {done['max_workers']}); "
               f"`byzer-like stat {alias}` shows the workers")


class ProgressLine:
    """Shows a deploy's progress on a terminal: one line on stderr, rewritten in place (nothing when piped)."""

    def __init__(self) -> None:
        self.last = ""
        self.tty = sys.stderr.isatty()

    def __call__(self, current: dict[str, Any]) -> None:
        """Show ``current`` (a status) if it says something new."""
        line = status_line(current)
        if line == self.last or not self.tty:
            return
        self.last = line
        click.echo(f"\r\x1b[2K{line}", err=True, nl=current["phase"] in ("ready", "failed"))


def status_line(current: dict[str, Any]) -> str:
    """One line: the phase, and each downloading worker's bytes and percent."""
    parts = [f"{current['alias']}: {current['phase']}"]
    for w in current.get("workers", []):
        if w.get("phase") == "downloading":
            done = w.get("done", 0) / 1e6
            if "percent" in w:
                parts.append(f"worker {w['worker']} {w['percent']}% of {w['total'] / 1e6:.1f} MB")
            else:
                parts.append(f"worker {w['worker']} {done:.1f} MB")
    return "; ".join(parts)


@click.command(name="status")
@click.argument("id_or_alias")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--wait", is_flag=True, help="Follow the deploy until it is ready or failed (exit 1 if failed).")
@ray_address_option
def status_cmd(id_or_alias: str, as_json: bool, wait: bool, ray_address: str) -> None:
    """Where a deploy stands (ID from `deploy --async`, or an alias): queued, downloading, loading, ready, failed."""
    from byzer_like.pool import status

    connect_cli(ray_address)
    current = status(id_or_alias)
    if wait and current["phase"] not in ("ready", "failed"):
        shown = ProgressLine()
        while current["phase"] not in ("ready", "failed"):
            shown(current)
            time.sleep(0.5)
            current = status(id_or_alias)
    if as_json:
        click.echo(json.dumps(current, indent=2))
    else:
        click.echo(f"{current['id']} ({current['backend']}): {current['phase']} after {current['elapsed_s']}s"
                   + (f": {current['error']}" if current.get("error") else ""))
        for w in current.get("workers", []):
            extra = f" {w.get('percent', '')}%" if "percent" in w else ""
            click.echo(f"  worker {w['worker']}: {w['phase']}{extra}")
    if wait and current["phase"] == "failed":
        sys.exit(1)


COMMANDS = [deploy, undeploy, list_cmd, presets, scale, status_cmd]
