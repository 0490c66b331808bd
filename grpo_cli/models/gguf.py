"""GGUF files (llama.cpp's format) as model input: de-quantized through transformers' GGUF support
into a plain Hugging Face folder, so everything downstream (grpo's own implementation, vLLM,
checkpoints, the reference model) sees an ordinary safetensors model.

`grpo model import FILE.gguf --out DIR` writes such a folder; `--model FILE.gguf` (or a folder that
holds one GGUF file and no config.json) imports it once into a cache folder keyed by the file's
path, size and modification time (`$GRPO_CACHE`, else `$XDG_CACHE_HOME/grpo`, else `~/.cache/grpo`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from grpo_cli.errors import UserError

EXTRA_HINT = "GGUF models need the gguf extra: pip install 'grpo-cli[gguf]' (gguf, accelerate)"


def gguf_file(path: Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the only `.gguf` in a folder without a
    config.json; None when `path` is not a GGUF model."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise UserError(f"{path}: holds several GGUF files ({names}); pass one as --model")
        if found:
            return found[0]
    return None


def cache_root() -> Path:
    if os.environ.get("GRPO_CACHE"):
        return Path(os.environ["GRPO_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "grpo"


def cached_import(file: Path) -> Path:
    """The HF folder imported from `file`, imported now unless the cache already holds it."""
    stat = file.stat()
    key = hashlib.blake2b(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=8).hexdigest()
    out = cache_root() / "gguf" / f"{file.stem}-{key}"
    if not (out / "config.json").is_file():
        import_gguf(file, out)
    return out


def _check_extra() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{EXTRA_HINT}; missing: {', '.join(missing)}")


def import_gguf(file: Path, out: Path) -> None:
    """De-quantize `file` to float32 and write a plain HF folder (config, generation config,
    safetensors weights, tokenizer with its chat template) at `out`, which must not exist or be
    empty. Written into a temporary folder beside `out` and renamed at the end: never half-way."""
    import torch

    if not file.is_file():
        raise UserError(f"GGUF file not found: {file}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not empty (grpo model import writes a new folder)")
    _check_extra()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(file.parent), file.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{file}: transformers cannot read this GGUF file ({_first_line(e)})") from None
    try:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        arch = getattr(config, "model_type", "?")
        raise UserError(
            f"{file}: transformers cannot de-quantize this GGUF model (architecture {arch!r}: {_first_line(e)})"
        ) from None
    # The loaded model is flagged as quantized and save_pretrained refuses it: move its (already
    # de-quantized) weights into a plain model of the same config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=False, assign=True)
    plain.tie_weights()
    if any(p.is_meta for p in plain.parameters()):
        raise UserError(f"{file}: the GGUF file lacks weights this architecture needs")
    generation = quantized.generation_config
    if not isinstance(generation, GenerationConfig):
        generation = GenerationConfig.from_model_config(config)
    plain.generation_config = generation
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
