"""Process supervision end to end: `grpo train` with `train.advantage.kind=process` on the arithmetic task,
the shipped tiny model sampling, the `prm` rule checker giving step rewards."""

from __future__ import annotations

import json

from safetensors.torch import load_file
from test_cli import grpo

from grpo_cli.models.loading import tiny_model_dir


def test_train_with_process_advantages(tmp_path):
    grpo(
        "train",
        "--out",
        "run",
        "--steps",
        "2",
        "--threads",
        "1",
        "--set",
        "train.advantage.kind=process",
        "--set",
        "verifiers=[{name: prm}]",
        "--set",
        "data.limit=16",
        "--set",
        "sampling.n=4",
        "--set",
        "sampling.max_new_tokens=48",
        "--set",
        "train.run.batch_size=8",
        "--set",
        "train.run.micro_batch_size=8",
        "--set",
        "train.optimizer.lr=1e-3",
        "--set",
        "train.run.eval_n=0",
        cwd=tmp_path,
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["verifier_failures"] == 0 for r in rows)
    # The shipped model writes `a op b = c` lines: the rule checker scores them, so rewards vary.
    assert any(0.0 < r["reward/prm_mean"] for r in rows), rows
    assert all(r["advantage_abs_mean"] > 0 for r in rows)  # step rewards differ inside each group
    before = load_file(str(tiny_model_dir() / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "checkpoints" / "step-000002" / "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)  # process advantages moved the weights
