"""Deploy, undeploy and list aliases: the pool of worker actors behind one router actor per alias.

A deploy either leaves a working alias or nothing at all: spec errors surface before any actor starts, and a
failed load removes the router and every worker it made.

Example:
    >>> deploy(DeploySpec(alias="smol", backend=BackendSpec(infer_backend="llama_cpp")))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray import exceptions as rex

from byzer_like import deploy_status
from byzer_like._ray import NAMESPACE, get_actor, named_actors, translate
from byzer_like.backends.registry import resolve_spec
from byzer_like.cluster import connect
from byzer_like.errors import (
    AliasExistsError,
    InvalidRequestError,
    InvalidSpecError,
    ModelLoadError,
    ModelNotFoundError,
)
from byzer_like.router import RouterActor
from byzer_like.spec import DeploySpec

logger = logging.getLogger(__name__)
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node
ROUTER_CONCURRENCY_MARGIN = 1000  # router calls beyond slots + queue that still reach our code (to get a 429)
_WORKER_MARK = "/worker-"


@dataclass(frozen=True)
class DeployHandle:
    """A deploy that runs in the cluster (``deploy(spec, wait=False)``): ask it where it stands, or wait for it.

    Attributes:
        id: The deployment id (``alias@hex``); ``byzer-like status ID`` asks the same.
        spec: The resolved spec being deployed.
    """

    id: str
    spec: DeploySpec

    def status(self) -> dict[str, Any]:
        """Phase (queued, downloading, loading, ready, failed), the reason of a failure, and each worker's phase."""
        return status(self.id)

    def wait(self, timeout: float | None = None, on_status: Callable[[dict[str, Any]], None] | None = None,
             poll_s: float = 0.5) -> DeploySpec:
        """Block until the deploy is ready (returns the spec) or failed (raises ``ModelLoadError``).

        Args:
            timeout: Seconds to wait at most (None: the spec's deploy timeout plus a margin).
            on_status: Called with each status seen (progress display).
            poll_s: Seconds between two looks.
        """
        return wait_ready(self.id, self.spec, timeout, on_status, poll_s)


def wait_ready(deploy_id: str, spec: DeploySpec, timeout: float | None = None,
               on_status: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 0.5) -> DeploySpec:
    """Poll ``status(deploy_id)`` until ready (the spec) or failed (``ModelLoadError`` with the reason)."""
    deadline = time.monotonic() + (timeout if timeout is not None else spec.deploy_timeout_s + 30)
    while True:
        current = status(deploy_id)
        if on_status is not None:
            on_status(current)
        if current["phase"] == deploy_status.READY:
            return spec
        if current["phase"] == deploy_status.FAILED:
            raise ModelLoadError(current.get("error") or f"deploy {deploy_id} failed")
        if time.monotonic() > deadline:
            raise ModelLoadError(f"deploy {deploy_id} is still {current['phase']} after waiting; "
                                 f"`byzer-like status {deploy_id}` follows it")
        time.sleep(poll_s)


def status(id_or_alias: str, *, address: str | None = None) -> dict[str, Any]:
    """Where the deploy of an alias (or with this id) stands; a failed deploy answers with its reason.

    Raises:
        ModelNotFoundError: no such alias or deployment id.
    """
    connect(address, start=False)
    alias = deploy_status.alias_of(id_or_alias)
    current = None
    try:
        current = ray.get(get_actor(alias).deploy_status.remote(), timeout=30)
    except (ModelNotFoundError, rex.RayActorError, rex.ActorUnavailableError):
        current = None
    if current is None or ("@" in id_or_alias and current["id"] != id_or_alias):
        kept = deploy_status.load(alias)
        current = kept if kept and ("@" not in id_or_alias or kept["id"] == id_or_alias) else None
    if current is None:
        raise ModelNotFoundError(f"no deployment '{id_or_alias}'; `byzer-like list` shows what is deployed",
                                 param="model")
    return current


def deploy(spec: DeploySpec, *, replace: bool = False, address: str | None = None,
           wait: bool = True) -> Any:
    """Deploy ``spec.alias``: validate, check the cluster can hold it, start the router and load every worker.

    Connects like the CLI when this process is not connected yet: ``address``, else ``RAY_ADDRESS``, else the
    running local cluster, else a new embedded local head node (announced on stderr).

    Args:
        spec: What to deploy.
        replace: Undeploy an existing deployment of the same alias first.
        address: A Ray cluster address (``host:port``); default ``auto``.
        wait: Block until every worker loaded (the default); False returns a :class:`DeployHandle` at once, and
            the deploy goes on in the cluster (a failure removes what it started, and ``status`` tells why).

    Returns:
        The resolved spec (backend defaults filled in), or a :class:`DeployHandle` when ``wait`` is False.

    Raises:
        InvalidSpecError: bad spec or not enough cluster resources (nothing started).
        AliasExistsError: the alias is taken and ``replace`` is False.
        ModelLoadError: a worker failed to load; nothing is left behind.
        ClusterError: no cluster could be reached or started.
    """
    spec = resolve_spec(spec)
    connect(address, start=True, say=_say)
    check_fits(spec)
    if spec.alias in list_aliases():
        if not replace:
            raise AliasExistsError(f"'{spec.alias}' is already deployed; undeploy it first or pass --replace",
                                   param="model")
        undeploy(spec.alias)
    slots = spec.scaling.bounds(spec.resources.num_workers)[1] * spec.worker_concurrency
    deploy_id = deploy_status.new_id(spec.alias)
    try:
        # NOTE: the router lives on the head node, which the cluster cannot lose (losing a worker node must not
        # take an alias's brain with it; its workers go wherever their resources fit).
        router = RouterActor.options(
            name=spec.alias, namespace=NAMESPACE, lifetime="detached", num_cpus=0, max_restarts=-1,
            resources={HEAD_NODE_RESOURCE: 0.001},
            max_concurrency=slots + spec.queue.max_queue + ROUTER_CONCURRENCY_MARGIN,
        ).remote(spec, deploy_id)
    except ValueError:  # a concurrent deploy took the name between our check and here
        raise AliasExistsError(f"'{spec.alias}' is already deployed", param="model") from None
    if not wait:  # NOTE: a round trip, so the deploy runs in the cluster even if this process exits right away
        ray.get(router.begin.remote(), timeout=60)
        return DeployHandle(deploy_id, spec)
    try:
        ray.get(router.start.remote(), timeout=spec.deploy_timeout_s + 30)  # NOTE: the router times out first
    except BaseException as exc:
        _remove(spec.alias, spec.initial_workers)
        if isinstance(exc, rex.GetTimeoutError):
            raise ModelLoadError(f"workers of '{spec.alias}' did not load within {spec.deploy_timeout_s:g}s; "
                                 "the cluster may lack free resources (see `byzer-like cluster status`)") from None
        raise translate(exc) from None
    return spec


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_fits(spec: DeploySpec) -> None:
    """Refuse a spec that asks for more CPUs/GPUs/resources than the cluster has free.

    Raises:
        InvalidSpecError: naming the resource, what is needed and what is free.
    """
    n = spec.initial_workers
    needs = {name: amount * n for name, amount in spec.resources.per_worker().items()}
    free = ray.available_resources()
    for name, need in needs.items():
        have = free.get(name, 0.0)
        if need > have + 1e-9:
            flag = {"CPU": "--cpus_per_worker", "GPU": "--gpus_per_worker"}.get(name, "the custom resources")
            raise InvalidSpecError(
                f"'{spec.alias}' needs {need:g} {name} in all ({n} workers) but the cluster has {have:g} free; "
                f"lower {flag} or --num_workers, or add nodes", param=flag.lstrip("-") if name in ("CPU", "GPU")
                else "custom_resources")


def undeploy(alias: str, *, force: bool = False, address: str | None = None) -> None:
    """Remove an alias: its router and every worker.

    Args:
        alias: The deployment to remove.
        force: Kill at once (no graceful engine shutdown), and also clean up leftovers when no router exists.
        address: A Ray cluster address when this process is not connected yet; default ``auto`` (never starts one).

    Raises:
        ModelNotFoundError: when nothing of that alias exists.
        ClusterError: no cluster is running.
    """
    connect(address, start=False)
    names = named_actors()
    leftovers = [n for n in names if n.startswith(alias + _WORKER_MARK)]
    if alias not in names and not leftovers and deploy_status.load(alias) is not None:
        deploy_status.forget(alias)  # a failed deploy: only its status was left
        return
    if alias not in names and not (force and leftovers):
        raise ModelNotFoundError(f"no deployment named '{alias}'; `byzer-like list` shows what is deployed",
                                 param="model")
    if alias in names and not force:
        try:
            ray.get(get_actor(alias).shutdown.remote(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - fall through to the forced removal below
            logger.warning("graceful undeploy of %s failed (%s); killing its actors", alias, translate(exc))
    _remove(alias, len(leftovers))


def _remove(alias: str, num_workers: int) -> None:
    """Kill the router and workers of ``alias`` by name, whatever state they are in; forget its adapters."""
    from byzer_like import adapter_registry

    adapter_registry.forget(alias)
    deploy_status.forget(alias)
    names = set(named_actors())
    targets = [alias] + [f"{alias}{_WORKER_MARK}{i}" for i in range(num_workers)]
    targets += [n for n in names if n.startswith(alias + _WORKER_MARK) and n not in targets]
    for name in targets:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            continue


def scale(alias: str, workers: int, *, address: str | None = None) -> dict[str, Any]:
    """Set an alias's worker count now (``min_workers``/``max_workers`` move when ``workers`` lies outside them).

    Returns:
        The new bounds and target: ``{"min_workers", "max_workers", "workers"}``.

    Raises:
        ModelNotFoundError: no such alias.
        InvalidRequestError: a negative count.
    """
    if workers < 0:
        raise InvalidRequestError(f"cannot scale to {workers} workers; give 0 or more", param="workers")
    connect(address, start=False)
    try:
        return ray.get(get_actor(alias).scale.remote(workers), timeout=60)
    except rex.RayError as exc:
        raise translate(exc) from None


def list_aliases(address: str | None = None) -> list[str]:
    """Every deployed alias (router actors in our namespace); connects like the CLI (never starts a cluster)."""
    connect(address, start=False)
    return [n for n in named_actors() if _WORKER_MARK not in n]


def describe(alias: str) -> dict[str, Any]:
    """A summary of one alias: backend, model, workers, concurrency."""
    router = get_actor(alias)
    spec: DeploySpec = ray.get(router.get_spec.remote())
    phase = ray.get(router.deploy_status.remote())["phase"]
    return {"alias": alias, "phase": phase, "backend": spec.backend.registry_key, "model_path": spec.backend.model_path,
            "num_workers": spec.resources.num_workers, "worker_concurrency": spec.worker_concurrency,
            "cpus_per_worker": spec.resources.cpus_per_worker, "gpus_per_worker": spec.resources.gpus_per_worker}


def list_deployments(address: str | None = None) -> list[dict[str, Any]]:
    """``describe`` of every alias that still answers; connects like the CLI (never starts a cluster)."""
    out = []
    for alias in list_aliases(address):
        try:
            out.append(describe(alias))
        except (ModelNotFoundError, rex.RayError):
            continue
    return out
