"""Loading a policy: model directory resolution, tokenizer, weights, device and threads."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from grpo_cli.config import ModelConfig, auto_threads
from grpo_cli.errors import UserError
from grpo_cli.models import lora

TINY = "tiny"


def tiny_model_dir() -> Path:
    return Path(str(resources.files("grpo_cli.builtin") / "tiny-model"))


def resolve_model_dir(path: str) -> Path:
    """`tiny` -> the shipped model; a GGUF file (or a folder holding one) -> its HF folder, imported
    once into the cache (grpo_cli.models.gguf); otherwise a local Hugging Face model directory."""
    if path == TINY:
        return tiny_model_dir()
    model_dir = Path(path)
    from grpo_cli.models import gguf

    file = gguf.gguf_file(model_dir)
    if file is not None:
        return gguf.cached_import(file)
    if not model_dir.is_dir():
        raise UserError(
            f"model directory not found: {model_dir} "
            "(model.path expects a local Hugging Face model folder, a .gguf file or 'tiny')"
        )
    if not (model_dir / "config.json").is_file() and not lora.is_adapter_dir(model_dir):
        raise UserError(f"{model_dir}: not a Hugging Face model folder (no config.json) nor a LoRA checkpoint")
    return model_dir


def model_reference(model_dir: Path) -> str:
    """How a LoRA checkpoint names the model it was trained from (`base_model_name_or_path`): `tiny`
    for the shipped model, so the name outlives the install it was trained in; else the absolute path."""
    resolved = model_dir.resolve()
    return TINY if resolved == tiny_model_dir().resolve() else str(resolved)


def adapter_base_dir(adapter_dir: Path, base: str = "") -> Path:
    """The base model folder of the LoRA checkpoint `adapter_dir`: `base` (`model.base`) when given,
    else the one its adapter_config.json names. A base that is not there is a one-line error naming it."""
    named = base or lora.adapter_base(adapter_dir)
    if named != TINY and not Path(named).exists():
        if base:
            raise UserError(f"model.base={base}: not found (the base model of the LoRA checkpoint {adapter_dir})")
        raise UserError(
            f"{adapter_dir}: LoRA checkpoint of the base model {named}, which is not there; pass the base "
            "model's folder with --set model.base=PATH (`tiny` for the shipped model)"
        )
    return resolve_model_dir(named)


def config_dir(model_dir: Path, base: str = "") -> Path:
    """The folder whose config.json describes `model_dir`'s model: the folder itself, or for a LoRA
    checkpoint its base's (`adapter_base_dir`)."""
    return config_dir(adapter_base_dir(model_dir, base)) if lora.is_adapter_dir(model_dir) else model_dir


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / f).is_file() for f in TOKENIZER_FILES)


def tokenizer_dir(model_dir: Path, base: str = "") -> Path:
    """The folder `model_dir`'s tokenizer loads from: the folder itself, or for a LoRA checkpoint saved
    without one (an adapter from elsewhere), its base's."""
    if lora.is_adapter_dir(model_dir) and not has_tokenizer(model_dir):
        return tokenizer_dir(adapter_base_dir(model_dir, base))
    return model_dir


def setup_torch(threads: int) -> None:
    """Set the CPU thread count once: `threads`, or when 0 the free cores (config.auto_threads)."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads or auto_threads())
    hf_logging.disable_progress_bar()  # our own progress bars are the only ones


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={device} but no CUDA device is available")
    return device


def load_tokenizer(model_dir: Path, base: str = "") -> Any:
    """Load the tokenizer (a LoRA checkpoint's own, else its base's: `tokenizer_dir`); left padding for
    batched generation, pad falls back to eos."""
    from transformers import AutoTokenizer

    model_dir = tokenizer_dir(model_dir, base)
    if not has_tokenizer(model_dir):
        raise UserError(f"{model_dir}: model folder has no tokenizer (tokenizer.json or tokenizer_config.json)")
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: could not load tokenizer ({str(e).splitlines()[0]})") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise UserError(f"{model_dir}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(model_dir: Path, cfg: ModelConfig, *, trainable: bool = False, keep_float32: bool = False) -> Any:
    """The causal LM in `model_dir`: grpo's own implementation (grpo_cli.models.llama) where `cfg.impl`
    allows and it supports the model, else transformers'. Weights that train, and every weight with
    `keep_float32` (an export), are float32; frozen ones are stored in the compute dtype."""
    import torch
    from safetensors import SafetensorError

    from grpo_cli.models import precision

    if lora.is_adapter_dir(model_dir):  # a LoRA run's checkpoint: its base with the adapter merged in
        base = adapter_base_dir(model_dir, cfg.base)
        # The base loads in float32 whatever the compute dtype: the merge sums in full precision, so
        # sampling this checkpoint and sampling its `grpo model merge` export give the same tokens.
        plain = load_model(base, replace(cfg, base=""), trainable=True)  # `model.base`: this checkpoint's base only
        model = lora.merge_into_base(
            lora.attach(plain, lora.checkpoint_config(model_dir), str(base), adapter_dir=model_dir)
        )
        model.train(trainable)
        model.requires_grad_(trainable)
        if not trainable and not keep_float32:
            precision.store_frozen(model)
        return model
    device = resolve_device(cfg.device)
    compute = precision.resolve(cfg.dtype, device, *matmul_shape(model_dir))
    dtype = torch.float32 if trainable or keep_float32 else compute  # master weights: precision's docstring
    model: Any = None
    try:
        if cfg.impl != "transformers":
            from grpo_cli.models import llama

            model = llama.load(model_dir, dtype)
            if isinstance(model, str):
                if cfg.impl == "native":
                    raise UserError(
                        f"{model_dir}: model.impl=native does not support this model: {model}; use "
                        "model.impl=auto or transformers"
                    )
                model = None
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except SafetensorError as e:  # a truncated or corrupt weights file
        raise UserError(
            f"{model_dir}: could not read the weights ({' '.join(str(e).split())}); is model.safetensors "
            "complete (a copy or download cut short)?"
        ) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: could not load model ({str(e).splitlines()[0]})") from None
    model.to(device)
    precision.mark(model, compute)
    model.train(trainable)
    if not trainable:
        model.requires_grad_(False)
    return model


def matmul_shape(model_dir: Path) -> tuple[int, int]:
    """(hidden size, MLP width) from the model's config.json, for `precision.resolve`; (0, 0) where
    it names neither (`auto` then measures a [64, 0] matmul: no saving, float32)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 0, 0
    return config_matmul_shape(config)


def config_matmul_shape(config: dict[str, Any]) -> tuple[int, int]:
    """`matmul_shape` of a parsed config.json (a multimodal one's `text_config` read)."""
    config = config.get("text_config", config)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    return hidden, int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a completion (generation config may list several)."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def cache_keyword(module: Any) -> str:
    """The keyword `module.forward` takes a KV cache by: `cache` (transformers 5.x models, grpo's own),
    else `past_key_values` (older transformers; 5.x warns on it and 5.40 removes it)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each layer's activations in backward instead of keeping them (non-reentrant)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def export_merged(checkpoint: Path, out: Path, cfg: ModelConfig) -> Path:
    """Write a LoRA checkpoint's base with the adapter merged in to `out` as a plain Hugging Face
    folder (weights, config, tokenizer). `out` must not exist or be empty; the folder is written
    beside it and renamed into place, so a failure leaves nothing half-written."""
    import os
    import shutil

    if not lora.is_adapter_dir(checkpoint):
        raise UserError(f"{checkpoint}: not a LoRA checkpoint (no {lora.ADAPTER_CONFIG} without a config.json)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder; choose a new one")
    model = load_model(checkpoint, cfg, keep_float32=True)
    tokenizer = load_tokenizer(checkpoint, cfg.base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cached_merge(checkpoint: Path, base: str = "") -> Path:
    """A LoRA checkpoint as a plain folder (its base with the adapter merged in), written once into
    the cache (`$GRPO_CACHE/merged/`, as GGUF imports are) for what loads plain folders only: a
    verifier's `model`. Keyed by the checkpoint's path and its adapter file's size and time."""
    import hashlib

    from grpo_cli.models.gguf import cache_root

    weights = checkpoint / lora.ADAPTER_WEIGHTS
    stat = weights.stat() if weights.is_file() else checkpoint.stat()
    text = f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{base}"
    key = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    out = cache_root() / "merged" / f"{checkpoint.name}-{key}"
    if not (out / "config.json").is_file():
        export_merged(checkpoint, out, ModelConfig(base=base))
    return out
