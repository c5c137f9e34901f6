"""LoRA adapters: find them (:func:`resolve_adapter`), tell their format, and convert PEFT ones for llama.cpp.

An adapter is either a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors`` or ``.bin``), which
transformers and vLLM load, or a GGUF LoRA file (``general.type = adapter``), which llama.cpp loads. A PEFT folder
served on a llama.cpp alias is converted once by :func:`peft_to_gguf` and the result cached next to the downloads.

The conversion follows llama.cpp's ``convert_lora_to_gguf.py`` for the ``llama`` architecture: tensors are named
after the base tensors they patch (``blk.N.attn_q.weight.lora_a`` / ``.lora_b``), ``lora_a`` keeps PEFT's
``(rank, in)`` layout and ``lora_b`` its ``(out, rank)`` one, and the rows of ``lora_b`` for ``q_proj`` and
``k_proj`` get the permutation llama.cpp's converter applies to those base weights (its RoPE pairs dimensions
differently from Hugging Face's). llama.cpp scales by ``alpha / rank`` from the GGUF; any other PEFT scaling (rsLoRA,
``alpha_pattern``) is folded into ``lora_b`` so the product is the same.

Example:
    >>> adapter = resolve_adapter("https://example.com/banana.tar.gz", cache)  # doctest: +SKIP
    >>> lora_file = gguf_lora_path(adapter, base_gguf, cache)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from byzer_like.errors import InvalidRequestError, ModelLoadError, UnsupportedError
from byzer_like.sources import fetch

if TYPE_CHECKING:
    import numpy as np

AdapterKind = Literal["peft", "gguf"]
CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
GGUF_MAGIC = b"GGUF"
CONVERTER_VERSION = "1"  # bump when the output of peft_to_gguf changes, so cached conversions are redone
VALID_ADAPTER = ("a LoRA adapter is a PEFT folder (adapter_config.json + adapter_model.safetensors) or a GGUF LoRA "
                 "file (general.type 'adapter', from llama.cpp's convert_lora_to_gguf.py)")

# Hugging Face llama module -> llama.cpp base tensor (``blk.N.<name>.weight``).
LLAMA_MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                 "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
SUPPORTED_ARCHITECTURES = ("llama",)
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>model\.layers\.(?P<block>\d+)\.(?:self_attn|mlp)\."
                       r"(?P<proj>\w+))\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")


@dataclass(frozen=True)
class LocalAdapter:
    """A LoRA adapter on local disk.

    Attributes:
        kind: ``"peft"`` (a folder) or ``"gguf"`` (a llama.cpp LoRA file).
        path: The folder or the file.

    Example:
        >>> LocalAdapter(kind="peft", path=Path("/cache/banana"))
        LocalAdapter(kind='peft', path=PosixPath('/cache/banana'))
    """

    kind: AdapterKind
    path: Path


def inspect_adapter(path: Path) -> LocalAdapter:
    """Tell the format of the adapter at ``path``.

    Raises:
        InvalidRequestError: when ``path`` is neither a PEFT LoRA folder nor a GGUF LoRA file.
        UnsupportedError: for a PEFT adapter of another type than LoRA (prefix tuning, IA3, ...).
    """
    if path.is_dir():
        _read_config(path)
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise InvalidRequestError(f"{path} has {CONFIG_FILE} but no adapter_model.safetensors; {VALID_ADAPTER}",
                                      param="source")
        return LocalAdapter(kind="peft", path=path)
    if path.is_file() and _starts_with_magic(path):
        kind = read_gguf_header(path)[0].get("general.type")
        if kind != "adapter":
            raise InvalidRequestError(f"{path} is a GGUF {kind or 'file'}, not an adapter; {VALID_ADAPTER}",
                                      param="source")
        return LocalAdapter(kind="gguf", path=path)
    raise InvalidRequestError(f"{path} is not a LoRA adapter; {VALID_ADAPTER}", param="source")


def resolve_adapter(source: str, cache: Path, *, sha256: str | None = None,
                    progress: Callable[[int, int | None], None] | None = None) -> LocalAdapter:
    """Fetch ``source`` (path or URL, see :func:`byzer_like.sources.fetch`) and tell its format.

    Raises:
        InvalidRequestError: for a source that cannot be fetched or is no LoRA adapter.
        UpstreamError: when a download fails on the server's side.
    """
    return inspect_adapter(fetch(source, cache, sha256=sha256, progress=progress))


def gguf_lora_path(adapter: LocalAdapter, base_gguf: Path, cache: Path) -> Path:
    """The GGUF LoRA file llama.cpp loads for ``adapter``: the file itself, or its cached conversion.

    Raises:
        InvalidRequestError, UnsupportedError: see :func:`peft_to_gguf`.
    """
    return adapter.path if adapter.kind == "gguf" else peft_to_gguf(adapter.path, base_gguf, cache)


def peft_to_gguf(peft_dir: Path, base_gguf: Path, cache: Path) -> Path:
    """Convert a PEFT LoRA for a llama-architecture model into a GGUF LoRA for ``base_gguf``, once.

    The result is cached in ``cache/lora-gguf`` under a hash of the adapter's files, the base file's identity
    (path, size, mtime) and the converter version, and written atomically.

    Args:
        peft_dir: The PEFT folder.
        base_gguf: The GGUF model the adapter will be applied to (read for its architecture, heads and shapes).
        cache: The cache directory.

    Returns:
        The GGUF LoRA file.

    Raises:
        InvalidRequestError: for a malformed adapter, or one whose shapes do not fit ``base_gguf``.
        UnsupportedError: for a base that is not ``llama``, adapted modules other than the attention and MLP
            projections (embeddings, lm_head), DoRA, LoRA biases or ``modules_to_save``.
    """
    config = _read_config(peft_dir)
    weights = next((peft_dir / name for name in WEIGHT_FILES if (peft_dir / name).is_file()), None)
    if weights is None:
        raise InvalidRequestError(f"{peft_dir} has no adapter_model.safetensors; {VALID_ADAPTER}", param="source")
    out = cache / "lora-gguf" / f"{_safe_name(peft_dir.name)}-{_conversion_key(peft_dir, weights, base_gguf)}.gguf"
    if out.is_file():
        return out
    base = _BaseModel.read(base_gguf)
    _check_config(config, peft_dir)
    alpha = float(config.get("lora_alpha") or 0)
    if alpha <= 0:
        raise InvalidRequestError(f"{peft_dir}/{CONFIG_FILE} has lora_alpha {config.get('lora_alpha')}; it must be > 0",
                                  param="source")
    tensors = _llama_tensors(_load_weights(weights), config, alpha, base, peft_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_gguf(out, base.architecture, alpha, tensors, peft_dir.name)
    return out


# -- PEFT side -----------------------------------------------------------------------------------------------------
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise InvalidRequestError(f"{folder} has no {CONFIG_FILE}; {VALID_ADAPTER}", param="source")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{path} is not valid JSON ({exc}); {VALID_ADAPTER}", param="source") from None
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{path} is not a JSON object; {VALID_ADAPTER}", param="source")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedError(f"{folder} is a {peft_type} adapter; only LoRA adapters can be served",
                               param="source")
    return config


def _check_config(config: dict[str, Any], folder: Path) -> None:
    """Reject the PEFT features a GGUF LoRA cannot express."""
    refused = {"use_dora": "DoRA", "lora_bias": "LoRA biases", "modules_to_save": "modules_to_save (full layer "
               "copies)", "layer_replication": "layer_replication", "fan_in_fan_out": "fan_in_fan_out"}
    found = [what for key, what in refused.items() if config.get(key)]
    if config.get("bias", "none") not in ("none", None):
        found.append(f"bias='{config['bias']}'")
    if found:
        raise UnsupportedError(f"{folder} uses {', '.join(found)}, which llama.cpp LoRA cannot apply; retrain without "
                               "them or serve the adapter on the transformers engine", param="source")


def _load_weights(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ModelLoadError(f"{path} is a PyTorch pickle and torch is not installed; save the adapter as "
                             "safetensors or `pip install torch`") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as float32 numpy arrays (F32, F16 and BF16 are understood)."""
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
    raw = path.read_bytes()
    try:
        (size,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + size])
    except (struct.error, ValueError) as exc:
        raise InvalidRequestError(f"{path} is not a safetensors file ({exc}); {VALID_ADAPTER}",
                                  param="source") from None
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise UnsupportedError(f"{path}: tensor {name} has dtype {info['dtype']}; save the adapter in float32, "
                                   "float16 or bfloat16", param="source")
        start, end = info["data_offsets"]
        array = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=(end - start) // np.dtype(
            dtypes[info["dtype"]]).itemsize, offset=8 + size + start).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array.astype(np.float32)
    return out


def _pattern_value(pattern: dict[str, Any], module: str) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: the first key matching the end of the module name."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


# -- llama layout --------------------------------------------------------------------------------------------------
def _llama_tensors(state: dict[str, np.ndarray], config: dict[str, Any], alpha: float, base: _BaseModel,
                   folder: Path) -> list[tuple[str, np.ndarray]]:
    """``(gguf_name, array)`` pairs: every PEFT A/B pair renamed, checked against the base, permuted and scaled."""
    pairs = _pairs(state, folder)
    out: list[tuple[str, np.ndarray]] = []
    for (module, block, proj), (lora_a, lora_b) in sorted(pairs.items(), key=lambda item: (item[0][1], item[0][2])):
        target = f"blk.{block}.{LLAMA_MODULES[proj]}.weight"
        _check_shapes(target, lora_a, lora_b, base, folder)
        rank = lora_a.shape[0]
        module_alpha = _pattern_value(config.get("alpha_pattern") or {}, module) or alpha
        peft_scale = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        factor = peft_scale / (alpha / rank)  # llama.cpp applies alpha / rank; fold the rest into lora_b
        if not math.isclose(factor, 1.0):
            lora_b = lora_b * factor
        if proj == "q_proj":
            lora_b = _permute_rows(lora_b, base.n_head)
        elif proj == "k_proj":
            lora_b = _permute_rows(lora_b, base.n_head_kv)
        out.append((f"{target}.lora_a", lora_a))
        out.append((f"{target}.lora_b", lora_b))
    return out


def _pairs(state: dict[str, np.ndarray], folder: Path) -> dict[tuple[str, int, str], list[np.ndarray]]:
    pairs: dict[tuple[str, int, str], list[Any]] = {}
    for key, array in state.items():
        match = _LORA_KEY.match(key)
        if match is None or match["proj"] not in LLAMA_MODULES:
            raise UnsupportedError(f"{folder} adapts '{key}'; a llama.cpp LoRA can only adapt the "
                                   f"{', '.join(LLAMA_MODULES)} projections (not embeddings or lm_head)",
                                   param="source")
        slot = pairs.setdefault((match["module"], int(match["block"]), match["proj"]), [None, None])
        slot[0 if match["ab"] == "A" else 1] = array
    for (module, _, _), (lora_a, lora_b) in pairs.items():
        if lora_a is None or lora_b is None:
            raise InvalidRequestError(f"{folder} has only one of lora_A/lora_B for {module}; the adapter is "
                                      "incomplete", param="source")
    if not pairs:
        raise InvalidRequestError(f"{folder} holds no LoRA tensors; {VALID_ADAPTER}", param="source")
    return pairs


def _check_shapes(target: str, lora_a: np.ndarray, lora_b: np.ndarray, base: _BaseModel, folder: Path) -> None:
    shape = base.shapes.get(target)
    if shape is None:
        raise InvalidRequestError(f"{folder} adapts {target}, which the base model does not have "
                                  f"({base.n_block} blocks); the adapter was trained for another model",
                                  param="source")
    n_in, n_out = shape
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1] or lora_a.shape[1] != n_in \
            or lora_b.shape[0] != n_out:
        raise InvalidRequestError(f"{folder}: LoRA shapes A{tuple(lora_a.shape)} B{tuple(lora_b.shape)} do not fit "
                                  f"{target} ({n_out}x{n_in}); the adapter was trained for another model",
                                  param="source")


def _permute_rows(lora_b: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K output rows from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one.

    Each head's rows ``[x0..x(d/2-1), y0..y(d/2-1)]`` become ``[x0, y0, x1, y1, ...]``, as llama.cpp's
    ``LlamaModel.permute`` does to the base ``q_proj``/``k_proj`` weights; LoRA's ``B`` holds the output rows.
    """
    rows, rank = lora_b.shape
    return lora_b.reshape(n_head, 2, rows // n_head // 2, rank).swapaxes(1, 2).reshape(rows, rank)


# -- GGUF side -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _BaseModel:
    """What the conversion needs from the base GGUF."""

    architecture: str
    n_head: int
    n_head_kv: int
    n_block: int
    shapes: dict[str, tuple[int, int]]  # base tensor -> (in, out)

    @classmethod
    def read(cls, path: Path) -> _BaseModel:
        fields, tensors = read_gguf_header(path)
        arch = str(fields.get("general.architecture", "?"))
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedError(f"converting a PEFT LoRA for a '{arch}' model is not supported (only "
                                   f"{', '.join(SUPPORTED_ARCHITECTURES)}); convert it with llama.cpp's "
                                   "convert_lora_to_gguf.py and give the .gguf file", param="source")
        n_head = int(fields[f"{arch}.attention.head_count"])
        return cls(architecture=arch, n_head=n_head,
                   n_head_kv=int(fields.get(f"{arch}.attention.head_count_kv", n_head)),
                   n_block=int(fields.get(f"{arch}.block_count", 0)),
                   shapes={name: (shape[0], shape[1]) for name, shape in tensors.items() if len(shape) == 2})


# GGUF value types: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The metadata (arrays skipped, as None) and the tensor shapes (ggml order: ``(in, out)``) of a GGUF file.

    A few milliseconds even for a model with a 50k-token vocabulary: array values are skipped, not parsed (the
    ``gguf`` package's reader parses them all, ~6 s for SmolLM2 on a small CPU).

    Raises:
        InvalidRequestError: when ``path`` is not a GGUF file or is truncated.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise InvalidRequestError(f"{path} is not a GGUF file (no GGUF magic); {VALID_ADAPTER}",
                                          param="source")
            _version, n_tensors, n_fields = _unpack(handle, "<IQQ")
            fields = {_read_string(handle): _read_value(handle, _unpack(handle, "<I")[0]) for _ in range(n_fields)}
            tensors: dict[str, tuple[int, ...]] = {}
            for _ in range(n_tensors):
                name = _read_string(handle)
                (n_dims,) = _unpack(handle, "<I")
                tensors[name] = tuple(int(d) for d in _unpack(handle, f"<{n_dims}Q"))
                _unpack(handle, "<IQ")  # type, offset
    except (struct.error, UnicodeDecodeError, KeyError, OSError) as exc:
        raise InvalidRequestError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})",
                                  param="source") from None
    return fields, tensors


def _unpack(handle: Any, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise struct.error("file ends inside the header")
    return struct.unpack(fmt, data)


def _read_string(handle: Any) -> str:
    (length,) = _unpack(handle, "<Q")
    data = handle.read(length)
    if len(data) != length:
        raise struct.error("file ends inside a string")
    return data.decode("utf-8")


def _skip_value(handle: Any, kind: int) -> None:
    if kind == _STRING:
        handle.seek(_unpack(handle, "<Q")[0], os.SEEK_CUR)
    else:
        _read_value(handle, kind)


def _read_value(handle: Any, kind: int) -> Any:
    if kind == _STRING:
        return _read_string(handle)
    if kind == _ARRAY:
        item, count = _unpack(handle, "<IQ")
        if item in (_STRING, _ARRAY):
            for _ in range(count):
                _skip_value(handle, item)
        else:
            handle.seek(struct.calcsize(_SCALARS[item]) * count, os.SEEK_CUR)
        return None
    return _unpack(handle, _SCALARS[kind])[0]


def _starts_with_magic(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def _write_gguf(out: Path, arch: str, alpha: float, tensors: list[tuple[str, np.ndarray]], name: str) -> None:
    import gguf
    import numpy as np

    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for tensor_name, array in tensors:
            writer.add_tensor(tensor_name, np.ascontiguousarray(array, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _conversion_key(peft_dir: Path, weights: Path, base_gguf: Path) -> str:
    digest = hashlib.sha256(CONVERTER_VERSION.encode())
    for path in (peft_dir / CONFIG_FILE, weights):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    info = base_gguf.resolve().stat()
    digest.update(f"{base_gguf.resolve()}|{info.st_size}|{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "adapter"
