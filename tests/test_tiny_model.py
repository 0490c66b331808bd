"""The shipped tiny model: its tokenizer round-trips exactly, it loads with the Auto classes, it is small,
and the build script runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import grpo_cli
from grpo_cli.builtin import tiny

SHIPPED = Path(grpo_cli.__file__).parent / "builtin" / "tiny-model"

TEXTS = [
    "What is 3 + 4 * 5 - 2?\n",
    "4 * 5 = 20\n3 + 20 = 23\n23 - 2 = 21\n#### 21",
    "  two  spaces,\ttab, trailing space \n\nblank line\n#### -17",
    "non-ASCII bytes: é ∑ 🙂",
]


@pytest.fixture(scope="module")
def shipped_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SHIPPED)


@pytest.mark.parametrize("text", TEXTS)
def test_shipped_tokenizer_round_trips(shipped_tokenizer, text):
    ids = shipped_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert shipped_tokenizer.decode(ids) == text
    if text.isascii():
        assert len(ids) == len(text)  # one token per character
        assert ids == [b + len(tiny.SPECIAL_TOKENS) for b in text.encode()]


def test_shipped_tokenizer_special_tokens(shipped_tokenizer):
    tok = shipped_tokenizer
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == tiny.SPECIAL_TOKENS
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.chat_template is None
    assert tok("#### 21")["input_ids"][-1] != tok.eos_token_id  # nothing appended implicitly
    ids = tok("#### 21<eos>")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "#### 21"
    config = json.loads((SHIPPED / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_raw_tokenizers_file_agrees(shipped_tokenizer):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    for text in TEXTS:
        assert raw.encode(text).ids == shipped_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_shipped_model_loads_and_is_small(shipped_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    total = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert total < 20 * 1024 * 1024
    model = AutoModelForCausalLM.from_pretrained(SHIPPED).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(shipped_tokenizer)
    assert model.config.eos_token_id == shipped_tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == shipped_tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == shipped_tokenizer.pad_token_id
    build = json.loads((SHIPPED / "build.json").read_text())
    assert build["params"] == sum(p.numel() for p in model.parameters())
    ids = shipped_tokenizer("What is 3 + 4?\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(shipped_tokenizer))
    assert torch.isfinite(logits).all()


def test_quick_accuracy_parses_the_final_line():
    assert tiny.extract_answer("4 * 5 = 20\n#### -17") == "-17"
    assert tiny.extract_answer("4 * 5 = 20\n#### 2x") is None
    assert tiny.extract_answer("no answer") is None


def test_tiny_build_is_reproducible(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages: list[str] = []
    stats = tiny.build_tiny_model(tmp_path / "a", seed=1, steps=2, batch_size=4, threads=1, log=messages.append)
    tiny.build_tiny_model(tmp_path / "b", seed=1, steps=2, batch_size=4, threads=1)
    assert messages and stats["args"] == {"seed": 1, "steps": 2, "batch_size": 4, "lr": tiny.DEFAULT_LR, "threads": 1}
    names = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
             "tokenizer_config.json", "build.json"}  # fmt: skip
    assert names <= {p.name for p in (tmp_path / "a").iterdir()}
    assert json.loads((tmp_path / "a" / "build.json").read_text())["params"] == stats["params"]

    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)  # same seed, same threads

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "a")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert tokenizer.decode(tokenizer("a b\nc")["input_ids"]) == "a b\nc"
    assert sum(p.numel() for p in model.parameters()) == stats["params"]
