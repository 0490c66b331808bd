"""LoRA adapters (`train.lora`) with `peft`, injected into the loaded model in place.

The model keeps its class (grpo's own Llama-family model or transformers'), so every path that
looks at it (the blocked log-prob head, prompt sharing, DDP) works unchanged: peft replaces each
targeted `nn.Linear` with a `lora.Linear` holding the frozen base layer plus `lora_A`/`lora_B`.

- The reference model is the same module with its adapters switched off (`adapters_disabled`):
  no second copy of the weights.
- A checkpoint holds the adapter in PEFT's format (`adapter_config.json`,
  `adapter_model.safetensors`, keys `base_model.model.<module>.lora_A.weight`), so
  `peft.PeftModel.from_pretrained(base, CHECKPOINT)` loads it too.
- `merged_state_dict` is the plain model's state dict with every adapter folded in (the names the
  base model had), what vLLM reloads and `grpo model merge` writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grpo_cli.config import LoraConfig
from grpo_cli.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ALL_LINEAR = "all-linear"
"""`train.lora.target_modules` shorthand: every linear layer but the output head (peft's meaning)."""
_PREFIX = "base_model.model."  # PeftModel's prefix of the wrapped model's parameter names, as saved
INSTALL_HINT = "pip install 'grpo-cli[lora]' (the peft package)"


def import_peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise UserError(f"train.lora needs peft, which is not installed ({e}); {INSTALL_HINT}") from None
    return peft


def linear_names(model: Any) -> list[str]:
    """The last name component of every linear layer that LoRA may target (the output head excluded)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and ".lora_" not in name:
            names.add(name.removesuffix(".base_layer").rsplit(".", 1)[-1])  # an adapted layer: its own name
    return sorted(names)


def target_modules(model: Any, wanted: list[str]) -> list[str]:
    """`train.lora.target_modules` resolved against `model`: `all-linear` expanded, and an unknown
    name an error that lists the names the model has."""
    have = linear_names(model)
    if ALL_LINEAR in wanted:
        return have
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise UserError(
            f"config: train.lora.target_modules: the model has no linear layer named {unknown[0]!r}; "
            f"its linear layers are: {', '.join(have)} (or use {ALL_LINEAR})"
        )
    return list(wanted)


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: Path) -> str:
    """The base model folder an adapter checkpoint was trained on (its `base_model_name_or_path`)."""
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path / ADAPTER_CONFIG}: unreadable adapter config ({e})") from None
    if not base:
        raise UserError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path; pass the base model folder")
    return str(base)


def checkpoint_config(path: Path) -> LoraConfig:
    """The `train.lora` settings an adapter checkpoint was written with (its PEFT adapter config)."""
    try:
        raw = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        return LoraConfig(
            rank=int(raw["r"]),
            alpha=float(raw["lora_alpha"]),
            dropout=float(raw.get("lora_dropout") or 0.0),
            target_modules=sorted(raw["target_modules"]),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / ADAPTER_CONFIG}: not a LoRA adapter config ({e})") from None


def attach(model: Any, cfg: LoraConfig, base_path: str, adapter_dir: Path | None = None) -> Any:
    """Inject a LoRA adapter into `model` in place and make its parameters the only trainable ones;
    with `adapter_dir`, load that checkpoint's adapter weights (resume). Returns `model`."""
    peft = import_peft()
    targets = target_modules(model, cfg.target_modules)
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_path,
    )
    model.requires_grad_(False)
    peft.inject_adapter_in_model(config, model)  # B = 0: the adapted model starts as the base
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    model.grpo_lora_config = config  # what save_adapter writes
    if adapter_dir is not None:
        load_adapter(model, adapter_dir)
    return model


def has_adapter(model: Any) -> bool:
    return hasattr(model, "grpo_lora_config")


def _tuner_layers(model: Any) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """The base model for the duration (the reference policy); a no-op for a model without adapters."""
    if not has_adapter(model):
        yield
        return
    layers = _tuner_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)  # and the adapter's parameters trainable again


def adapter_state_dict(model: Any) -> dict[str, Any]:
    """The adapter's weights under PEFT's saved names."""
    from peft import get_peft_model_state_dict

    return {_PREFIX + k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter(model: Any, path: Path) -> None:
    """`adapter_config.json` and `adapter_model.safetensors` in PEFT's format."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    model.grpo_lora_config.save_pretrained(str(path))
    save_file(adapter_state_dict(model), str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapter(model: Any, path: Path) -> None:
    """Load the adapter weights of checkpoint `path` into `model`'s injected adapter, exactly."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = path / ADAPTER_WEIGHTS
    if not file.is_file():
        raise UserError(f"{path}: no {ADAPTER_WEIGHTS} (not a LoRA checkpoint)")
    saved = {k.removeprefix(_PREFIX): v for k, v in load_file(str(file)).items()}
    result = set_peft_model_state_dict(model, saved)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        odd = (result.unexpected_keys or missing)[0]
        raise UserError(f"{file}: adapter does not fit the model (parameter {odd}); resume with the same train.lora")


class AdapterSavable:
    """What a LoRA run's checkpoint saves of the model: the adapter only (`save_pretrained` as the
    trainer's checkpoint writer calls it)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def save_pretrained(self, path: Any, **_: Any) -> None:
        save_adapter(self.model, Path(path))


def merged_state_dict(model: Any) -> dict[str, Any]:
    """`model`'s weights with each adapter folded in (W + B A * alpha / r), under the names of the
    model without adapters; the model itself is not changed. A model without adapters: its state dict."""
    state = model.state_dict()
    if not has_adapter(model):
        return state
    import torch

    deltas = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                for adapter in module.active_adapters:
                    delta = module.get_delta_weight(adapter)
                    deltas[f"{name}.weight"] = deltas[f"{name}.weight"] + delta if f"{name}.weight" in deltas else delta
        out = {}
        for key, value in state.items():
            if "lora_" in key:
                continue
            plain = key.replace(".base_layer.", ".")
            out[plain] = value + deltas[plain].to(value.dtype) if plain in deltas else value
    return out


def merge_into_base(model: Any) -> Any:
    """Fold the adapters into the base weights and put the plain layers back: `model` is then the
    ordinary model (saves as a plain Hugging Face folder). Returns it."""
    import torch

    if not has_adapter(model):
        return model
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    del model.grpo_lora_config
    model.__dict__.pop("peft_config", None)
    return model
