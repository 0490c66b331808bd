"""GGUF models as input (`grpo model import`, `--model FILE.gguf`) and, on the real SmolLM2-135M
(`real_model`: run with `python -m pytest -m real_model`), grpo's own implementation against
transformers'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_cli.errors import UserError
from grpo_cli.models import gguf

ROOT = Path(__file__).resolve().parent.parent


def _grpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grpo_cli", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


# ------------------------------------------------------------------------------- bad input (fast)


def test_gguf_file_detection(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"x")
    assert gguf.gguf_file(file) == file
    assert gguf.gguf_file(tmp_path) == file  # a folder holding one GGUF and no config.json
    (tmp_path / "n.gguf").write_bytes(b"x")
    with pytest.raises(UserError, match="several GGUF files"):
        gguf.gguf_file(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert gguf.gguf_file(tmp_path) is None  # an HF folder stays an HF folder


def test_missing_extra_names_it(tmp_path, monkeypatch):
    import importlib.util

    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(UserError, match=r"grpo-cli\[gguf\].*missing: gguf"):
        gguf.import_gguf(file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_refuses_non_empty_out_and_missing_file(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        gguf.import_gguf(file, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="not found"):
        gguf.import_gguf(tmp_path / "nope.gguf", tmp_path / "out2")


def test_cli_import_of_a_broken_file_is_one_line_exit_2(tmp_path):
    """Not a GGUF file (or gguf not installed): one line naming the file or the extra, exit 2, no folder."""
    file = tmp_path / "broken.gguf"
    file.write_bytes(b"GGUF" + b"\0" * 64)
    out = tmp_path / "out"
    proc = _grpo("model", "import", str(file), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "broken.gguf" in lines[0] or "grpo-cli[gguf]" in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no temporary left behind


# ------------------------------------------------------------------------ the real model (slow)

SMOL_PROMPTS = ["What is 7 + 5?", "Name a prime number larger than 10.", "Write the word 'cat' backwards."]


def _smol_models(path: Path):
    from transformers import AutoModelForCausalLM

    from grpo_cli.models import llama

    native = llama.load(path, torch.float32)
    assert not isinstance(native, str), native
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return native, hf


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    from grpo_cli.models.loading import load_tokenizer

    torch.manual_seed(0)
    native, hf = _smol_models(smollm2_dir)
    return smollm2_dir, load_tokenizer(smollm2_dir), native, hf


@pytest.mark.real_model
def test_import_writes_a_plain_hf_folder(smol):
    path, tokenizer, native, hf = smol
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["num_key_value_heads"] == 3
    assert (path / "model.safetensors").is_file()
    assert tokenizer.chat_template  # the GGUF's chat template came along
    assert sum(p.numel() for p in native.parameters()) == sum(p.numel() for p in hf.parameters())


@pytest.mark.real_model
def test_smollm2_greedy_text_equal_transformers(smol):
    from grpo_cli.models.loading import eos_token_ids
    from grpo_cli.pipeline.data import render_prompt
    from grpo_cli.sampling.base import SamplingParams
    from grpo_cli.sampling.hf import HFSampler

    path, tokenizer, native, hf = smol
    prompts = [
        render_prompt({"prompt": p}, tokenizer, template="{prompt}\n", chat_template="auto") for p in SMOL_PROMPTS
    ]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)
    got, want = (HFSampler(m, tokenizer, eos_token_ids(m, tokenizer)).generate(prompts, params) for m in (native, hf))
    for g, w in zip(got, want):
        assert g[0].text == w[0].text
        assert g[0].token_ids == w[0].token_ids
        torch.testing.assert_close(torch.tensor(g[0].logprobs), torch.tensor(w[0].logprobs), rtol=0, atol=2e-4)
    assert any(g[0].text.strip() for g in got)


def _batch(tokenizer):
    """Two left-padded rows of different lengths, as the sampler and the update build them."""
    rows = [tokenizer(t)["input_ids"] for t in ("The capital of France is Paris.", "2 + 2 = 4, and 3 + 3 = 6 too.")]
    width = max(map(len, rows))
    ids = torch.full((2, width), tokenizer.pad_token_id)
    attn = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return ids, attn


@pytest.mark.real_model
def test_smollm2_logprobs_and_gradients_equal_transformers(smol):
    path, tokenizer, native, hf = smol
    ids, attn = _batch(tokenizer)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    results = []
    for model in (native, hf):
        model.train()
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(2, ids[:, 1:, None]).squeeze(2)  # [2, T-1]
        mask = attn[:, 1:].bool() & attn[:, :-1].bool()
        (logp * mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach()[mask], grads))
        model.zero_grad(set_to_none=True)
    (got_logp, got), (want_logp, want) = results
    torch.testing.assert_close(got_logp, want_logp, rtol=0, atol=1e-4)
    assert set(got) == set(want)
    for name in want:
        scale = max(1.0, float(want[name].abs().max()))
        torch.testing.assert_close(
            got[name], want[name], rtol=1e-3, atol=1e-4 * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.real_model
def test_eval_on_the_gguf_file(smollm2_gguf_file, tmp_path):
    """`grpo eval --model FILE.gguf` on a few problems: imported into the cache once, then evaluated."""
    from grpo_cli.builtin import arith

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arith.generate(3, seed=4)))
    out = tmp_path / "eval"
    env = {"GRPO_CACHE": str(tmp_path / "cache")}
    proc = _grpo(
        "eval", "--model", str(smollm2_gguf_file), "--data", str(data), "--n", "2", "--k", "1,2", "--out", str(out),
        "--set", "sampling.max_new_tokens=16", "--set", "data.instruction=End with #### N.", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cached = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    document = json.loads((out / "results.json").read_text())
    (result,) = document["results"].values()
    assert result["problems"] == 3 and result["n"] == 2, result
    assert 0 <= result["pass@k"]["1"] <= result["pass@k"]["2"] <= 1, result  # pass@k grows with k
    scored = [json.loads(line) for line in (out / "scored-0.jsonl").read_text().splitlines()]
    assert len(scored) == 6 and all(r["completion_tokens"] > 0 and r["completion"] for r in scored)
