"""The edge where byzerllm's flags, ``--infer_params k=v`` lists and YAML files become one ``DeploySpec``.

Nothing below this module sees dotted ``saas.*`` / ``backend.*`` strings: they become the backend's
``engine_kwargs`` here, once. Environment references are rendered here too (specs never read the environment).

Example:
    >>> spec_from_flags({"model": "smol", "infer_backend": "llama_cpp", "infer_params": ["n_ctx=2048"]}, {})
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from byzer_like.errors import InvalidSpecError
from byzer_like.spec import DeploySpec

_ENV_REF = re.compile(r"ENV\s*\{\{\s*(\w+)\s*\}\}|\$\{(\w+)\}")
# flag name -> (section, field) in DeploySpec
_FLAG_FIELDS: dict[str, tuple[str | None, str]] = {
    "model": (None, "alias"),
    "alias": (None, "alias"),
    "pretrained_model_type": ("backend", "model_type"),
    "infer_backend": ("backend", "infer_backend"),
    "model_path": ("backend", "model_path"),
    "model_sha256": ("backend", "model_sha256"),
    "num_workers": ("resources", "num_workers"),
    "worker_concurrency": ("resources", "worker_concurrency"),
    "cpus_per_worker": ("resources", "cpus_per_worker"),
    "gpus_per_worker": ("resources", "gpus_per_worker"),
    "resources": ("resources", "custom_resources"),
    "max_queue": ("queue", "max_queue"),
    "max_queue_size": ("queue", "max_queue"),
    "request_timeout": ("queue", "request_timeout_s"),
    "min_workers": ("scaling", "min_workers"),
    "max_workers": ("scaling", "max_workers"),
    "scale_up_step": ("scaling", "scale_up_step"),
    "max_idle_time": ("scaling", "max_idle_time_s"),
    "target_ongoing_requests": ("scaling", "target_ongoing_requests"),
    "upscale_delay": ("scaling", "upscale_delay_s"),
    "downscale_delay": ("scaling", "downscale_delay_s"),
    "max_retries": ("scaling", "max_retries"),
    "health_check_period": ("scaling", "health_check_period_s"),
    "max_restarts": ("scaling", "max_restarts"),
    "deploy_timeout": (None, "deploy_timeout_s"),
}
LIST_FLAGS = {"infer_params", "adapters"}
IGNORED_FLAGS = {"ray_address", "file", "command"}  # byzerllm YAML files may carry these


def parse_value(text: str) -> Any:
    """Byzerllm's typing of an ``--infer_params`` value: true/false -> bool, then int, then float, else text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_infer_params(items: list[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["k=v", ...]`` (or an already-built mapping) -> a dict with typed values.

    Raises:
        InvalidSpecError: for an item without ``=``.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidSpecError(f"--infer_params item '{item}' is not key=value; write e.g. n_ctx=2048",
                                   param="infer_params")
        out[key.strip()] = parse_value(value)
    return out


def engine_kwargs(params: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Strip the consumer prefix: ``saas.*`` for saas/* types, ``backend.*`` (or bare keys) for local engines.

    Raises:
        InvalidSpecError: for a key whose prefix belongs to the other kind of deployment.
    """
    is_saas = model_type.startswith("saas/")
    own, other = ("saas.", "backend.") if is_saas else ("backend.", "saas.")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith(other):
            kind = "saas/* model types" if other == "saas." else "local engines (custom/*)"
            raise InvalidSpecError(f"infer_params '{key}' applies to {kind}, not {model_type}; remove it",
                                   param=key)
        out[key.removeprefix(own)] = value
    return out


def spec_from_flags(flags: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> DeploySpec:
    """Build a ``DeploySpec`` from byzerllm-style flags (``None`` values are unset) over ``defaults``.

    Raises:
        InvalidSpecError: naming the field at fault and what to do.
    """
    defaults = dict(defaults or {})
    block = defaults.pop("autoscaling", None) or {}  # seed 003's knobs as a YAML block
    if not isinstance(block, Mapping):
        raise InvalidSpecError("'autoscaling' must be a mapping of min_workers, max_workers, ...", param="autoscaling")
    merged = {**defaults, **block, **{k: v for k, v in flags.items() if v is not None and v != ()}}
    unknown = sorted(set(merged) - set(_FLAG_FIELDS) - IGNORED_FLAGS - LIST_FLAGS)
    if unknown:
        raise InvalidSpecError(f"unknown setting '{unknown[0]}'; known: {', '.join(sorted(_FLAG_FIELDS))}, "
                               "infer_params, adapters", param=unknown[0])
    data: dict[str, Any] = {"backend": {}, "resources": {}, "queue": {}, "scaling": {}}
    for flag, value in merged.items():
        if flag in _FLAG_FIELDS:
            section, name = _FLAG_FIELDS[flag]
            (data[section] if section else data)[name] = value
    model_type = data["backend"].get("model_type", "custom/auto")
    kwargs = engine_kwargs(parse_infer_params(merged.get("infer_params")), model_type)
    # NOTE: saas.adapters.NAME=upstream-model names a fine-tuned upstream model as an adapter of the alias.
    saas_adapters = {k.removeprefix("adapters."): v for k, v in kwargs.items() if k.startswith("adapters.")}
    data["backend"]["engine_kwargs"] = {k: v for k, v in kwargs.items() if not k.startswith("adapters.")}
    data["adapters"] = parse_adapters(merged.get("adapters")) + parse_adapters(saas_adapters)
    return validate_spec(data)


def parse_adapters(value: Any) -> list[dict[str, Any]]:
    """Adapters from ``NAME=SOURCE`` strings (CLI), a ``{name: source}`` mapping or a list of mappings (YAML).

    Raises:
        InvalidSpecError: for an entry that is none of these.
    """
    if not value:
        return []
    if isinstance(value, Mapping):
        return [{"name": str(k), "source": str(v)} for k, v in value.items()]
    if isinstance(value, str):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, Mapping):
            out.append(dict(item))
        elif isinstance(item, str) and "=" in item:
            name, source = item.split("=", 1)
            out.append({"name": name.strip(), "source": source.strip()})
        else:
            raise InvalidSpecError(f"adapter {item!r} is not NAME=SOURCE (e.g. --adapters banana=/models/lora)",
                                   param="adapters")
    return out


def validate_spec(data: Mapping[str, Any]) -> DeploySpec:
    """``DeploySpec.model_validate`` with the first error turned into one clear line.

    Raises:
        InvalidSpecError: naming the field.
    """
    try:
        return DeploySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        field = _flag_name(loc)
        value = f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else ""
        raise InvalidSpecError(f"invalid {field}: {err['msg']}{value}", param=field) from None


def _flag_name(loc: list[str]) -> str:
    """The user's name for a spec location: ``resources.num_workers`` -> ``--num_workers``."""
    reverse = {(s, f): flag for flag, (s, f) in reversed(_FLAG_FIELDS.items()) if flag != "alias"}
    reverse[("queue", "max_queue")] = "max_queue"
    if len(loc) >= 2 and (loc[0], loc[1]) in reverse:
        return "--" + reverse[(loc[0], loc[1])]
    if len(loc) == 1 and (None, loc[0]) in reverse:
        return "--" + reverse[(None, loc[0])]
    return ".".join(loc) or "spec"


def render_env(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace ``ENV {{VAR}}`` and ``${VAR}`` references in strings (recursively in lists and dicts).

    Raises:
        InvalidSpecError: for a variable that is not set.
    """
    if isinstance(value, dict):
        return {k: render_env(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [render_env(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in environ:
            raise InvalidSpecError(f"environment variable {name} is not set (referenced in the spec file); "
                                   f"export {name}=... first", param=name)
        return environ[name]

    return _ENV_REF.sub(sub, value)


def load_spec_file(path: str | Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read a YAML spec (byzerllm flag names as keys), rendering environment references.

    Returns:
        The flags as a dict, ready for :func:`spec_from_flags` (or a native nested spec under ``alias``).

    Raises:
        InvalidSpecError: when the file is missing or not a YAML mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidSpecError(f"spec file '{path}' does not exist", param="file")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise InvalidSpecError(f"spec file '{path}' is not valid YAML: {exc}", param="file") from None
    if not isinstance(data, dict):
        raise InvalidSpecError(f"spec file '{path}' must be a mapping of settings", param="file")
    return render_env(data, environ)


def spec_from_mapping(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> DeploySpec:
    """A spec from a YAML mapping: the native nested form (has ``backend``/``resources``) or byzerllm flags."""
    if any(key in data for key in ("backend", "resources", "queue", "scaling")):
        merged = dict(data)
        if overrides and overrides.get("model"):
            merged["alias"] = overrides["model"]
        return validate_spec(merged)
    return spec_from_flags(overrides or {}, defaults=data)
