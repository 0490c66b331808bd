"""Checks of what would fail in a run's first seconds, made before any work (and by `--dry-run`):
verifier names, model folders, and whether prompt + `sampling.max_new_tokens` fit the model's
positions. Each failure is a one-line UserError that says what to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo_cli.config import Config
from grpo_cli.errors import UserError


def check_verifiers(cfg: Config) -> None:
    from grpo_cli.plugins import check_names

    check_names([spec.name for spec in cfg.verifiers])


def check_model(path: str, base: str = "") -> Path:
    """The model folder of `path` (`tiny`, a local folder, or a LoRA checkpoint whose base model, its
    own or `model.base`, is there), with its config and tokenizer files."""
    from grpo_cli.models.loading import config_dir, has_tokenizer, resolve_model_dir, tokenizer_dir

    model_dir = resolve_model_dir(path)
    config_dir(model_dir, base)  # a LoRA checkpoint's base: there, or a one-line error naming it
    if not has_tokenizer(tokenizer_dir(model_dir, base)):
        raise UserError(f"{model_dir}: model folder has no tokenizer (tokenizer.json or tokenizer_config.json)")
    return model_dir


def model_positions(model_dir: Path) -> int | None:
    """The model's `max_position_embeddings` from its config.json (None when it states none)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{model_dir}/config.json: cannot be read ({e})") from None
    config = config.get("text_config", config)  # multimodal configs nest the language model's
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def check_fits(cfg: Config, path: str, sources: list[str] | None = None) -> None:
    """`sampling.max_new_tokens`, and with `sources` the longest of their rendered prompts plus it, fit
    the model's positions."""
    from grpo_cli.models.loading import config_dir

    model_dir = check_model(path, cfg.model.base)
    positions = model_positions(config_dir(model_dir, cfg.model.base))
    if positions is None:
        return
    new = cfg.sampling.max_new_tokens
    fix = f"pass a --model with a longer context, or lower it (--set sampling.max_new_tokens={min(64, positions // 4)})"
    if new >= positions:
        raise UserError(
            f"sampling.max_new_tokens={new} does not fit model {path}: it has {positions} positions for prompt and "
            f"completion; {fix}"
        )
    if not sources:
        return
    longest, where = _longest_prompt(cfg, model_dir, sources)
    if longest + new > positions:
        raise UserError(
            f"{where}: its prompt has {longest} tokens, which with sampling.max_new_tokens={new} exceeds the "
            f"{positions} positions of model {path}; {fix}, or shorten the prompt (data.template, data.instruction)"
        )


def _longest_prompt(cfg: Config, model_dir: Path, sources: list[str]) -> tuple[int, str]:
    """(tokens, "SOURCE row N") of the longest rendered prompt over `sources`."""
    from grpo_cli.models.loading import load_tokenizer
    from grpo_cli.pipeline.sample import problems_from, render_prompts
    from grpo_cli.sampling.hf import encode

    tokenizer = load_tokenizer(model_dir, cfg.model.base)
    tokenizer.model_max_length = 2**62  # measuring, not feeding the model: no "longer than" warning
    best: tuple[int, str] = (0, "")
    for source in dict.fromkeys(sources):
        problems: list[dict[str, Any]] = problems_from(source, cfg.data, need_answer=False)
        prompts = render_prompts(problems, tokenizer, cfg.data)
        # Tokens grow with characters: encoding the longest few texts finds the longest prompt
        # without encoding a whole training set.
        candidates = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)[:CANDIDATES]
        for i in candidates:
            tokens = len(encode(tokenizer, prompts[i]))  # as the sampler encodes it
            if tokens > best[0]:
                best = (tokens, f"{source} row {i + 1}")
    return best


CANDIDATES = 256
"""Prompts encoded per data source: the longest by characters."""
