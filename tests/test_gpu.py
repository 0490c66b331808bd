"""CUDA: device placement and half-precision dtypes (marked `gpu`; skipped without a CUDA device).
`benchmarks/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from grpo_cli.config import ModelConfig
from grpo_cli.models.loading import eos_token_ids, load_model, load_tokenizer
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.sampling.hf import HFSampler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_native_matches_transformers_on_cuda(random_model_dir, dtype):
    ids = torch.randint(3, 200, (2, 12), device="cuda")
    out = {}
    for impl in ("native", "transformers"):
        model = load_model(random_model_dir, ModelConfig(device="cuda", dtype=dtype, impl=impl))
        assert model.device.type == "cuda" and model.dtype == getattr(torch, dtype)
        with torch.no_grad():
            out[impl] = model(input_ids=ids).logits.float()
    tol = 1e-4 if dtype == "float32" else 3e-2
    torch.testing.assert_close(out["native"], out["transformers"], rtol=tol, atol=tol)


def test_sampling_on_cuda_equals_transformers_greedy(random_model_dir):
    tokenizer = load_tokenizer(random_model_dir)
    results = []
    for impl in ("native", "transformers"):
        model = load_model(random_model_dir, ModelConfig(device="cuda", impl=impl))
        sampler = HFSampler(model, tokenizer, eos_token_ids(model, tokenizer))
        results.append(sampler.generate(["1 + 2 =", "7 * 3 ="], SamplingParams(n=2, temperature=0, max_new_tokens=8)))
    for want, got in zip(*results):
        assert [c.token_ids for c in want] == [c.token_ids for c in got]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_two_steps_on_cuda(tmp_path, dtype):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "grpo_cli", "train", "--steps", "2", "--out", str(out), "--set", "model.device=cuda",
        "--set", f"model.dtype={dtype}", "--set", "train.run.batch_size=32", "--set", "train.run.eval_n=0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("loss" in r and math.isfinite(r["loss"]) and r["skipped_updates"] == 0 for r in rows), rows
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows), rows  # a real update ran
