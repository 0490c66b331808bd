"""Training under torchrun: two `gloo` ranks on this CPU give the weights and metrics of one process
on the same global batch (DDP and FSDP2), write one run folder, and resume exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import plugin_dir, weights  # noqa: F401  (plugin_dir is a fixture)

from grpo_cli.config import load_config
from grpo_cli.report import Reporter
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.training.recorder import TIMING_KEYS
from grpo_cli.training.trainer import train

# 3 prompts x 4 samples: the ranks sample 2 and 1 prompts; 6 rows each, in micro-batches of 4.
SETS = [
    "model.threads=1",
    "data.limit=40",
    "sampling.n=4",
    "sampling.max_new_tokens=8",
    "train.run.batch_size=12",
    "train.run.micro_batch_size=4",
    "train.run.steps=3",
    "train.optimizer.lr=1e-3",
    "train.run.eval_n=0",
    "verifiers=[{name: digits}]",
]
DDP = [
    "train.loss.beta=0.04",
    "train.run.mu=2",
    "train.loss.ref_sync_every=2",
]  # reference model, old log-probs, ref sync
# No KL: zero-advantage rows are skipped, so the ranks train on unequal shares (padding micro-batches).
FSDP = [
    "train.run.parallel=fsdp",
    "train.loss.beta=0",
    "train.loss.aggregation=token",
    "train.run.save_every=1",
    "train.run.keep_last=3",
]


def _env(plugins: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }


def _cli(model_dir: Path, out: Path, sets: list[str]) -> list[str]:
    return ["train", "--model", str(model_dir), "--out", str(out), "--quiet", *(a for s in sets for a in ("--set", s))]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "grpo_cli",
            *args,
        ],
        env,
    )


def _rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def _single(model_dir: Path, out: Path, sets: list[str]) -> Path:
    cfg = load_config(None, [*SETS, *sets], {"model.path": str(model_dir), "train.run.out_dir": str(out)})
    return train(cfg, Reporter()).last_checkpoint


def _assert_same_run(one: Path, two: Path, step: str = "step-000003") -> None:
    a, b = weights(one / "checkpoints" / step), weights(two / "checkpoints" / step)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
    rows_a, rows_b = _rows(one), _rows(two)
    assert [r["step"] for r in rows_b] == [1, 2, 3]  # rank 0 alone writes the metrics
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (ra["step"], key)


@pytest.mark.slow
def test_ddp_two_ranks_equal_one_process(random_model_dir, plugin_dir, tmp_path):  # noqa: F811
    one = tmp_path / "one"
    _single(random_model_dir, one, DDP)
    # The --nproc shortcut re-runs the command under torchrun.
    proc = _run(
        [sys.executable, "-m", "grpo_cli", *_cli(random_model_dir, tmp_path / "two", [*SETS, *DDP]), "--nproc", "2"],
        _env(plugin_dir),
    )
    _assert_same_run(one, tmp_path / "two")
    assert proc.stderr.count("trained 3 steps") == 1  # one rank reports
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step-000003"]


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_and_resume(random_model_dir, plugin_dir, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    _single(random_model_dir, one, FSDP)
    env = _env(plugin_dir)
    _torchrun(_cli(random_model_dir, two, [*SETS, *FSDP]), env)
    _assert_same_run(one, two)
    # Resume the two ranks from step 2: the same step 3, to the bit (optimizer shards, data order).
    last = two / "checkpoints" / "step-000003"
    kept = weights(last)
    shutil.rmtree(last)
    _torchrun(["train", "--resume", str(two), "--quiet"], env)
    again = weights(last)
    assert all(torch.equal(kept[k], again[k]) for k in kept)
    assert [r["step"] for r in _rows(two)] == [1, 2, 3]


def test_a_share_of_the_prompts_samples_what_the_whole_request_does(random_model_dir):
    """Each completion has its own random stream keyed by its global prompt index: a rank sampling
    prompts 1.. of a request (prompt_offset=1) gets exactly the whole request's completions."""
    from transformers import AutoModelForCausalLM

    from grpo_cli.models.loading import eos_token_ids, load_tokenizer
    from grpo_cli.sampling.hf import HFSampler

    model = AutoModelForCausalLM.from_pretrained(str(random_model_dir)).eval()
    tokenizer = load_tokenizer(random_model_dir)
    sampler = HFSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=5)
    prompts = ["1+2=\n", "What is 3*4?\n", "7-5\n"]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=3)
    whole = sampler.generate(prompts, params)
    share = sampler.generate(
        prompts[1:], SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=3, prompt_offset=1)
    )
    assert [[c.token_ids for c in g] for g in whole[1:]] == [[c.token_ids for c in g] for g in share]
    assert len({tuple(c.token_ids) for g in whole for c in g}) > 3  # real sampling, not copies


def test_nproc_checks_the_config_before_launching(tmp_path):
    from test_cli import assert_user_error, grpo

    proc = grpo(
        "train", "--nproc", "2", "--set", "sampling.n=3", "--set", "train.run.batch_size=8", cwd=tmp_path, expect=None
    )
    assert_user_error(proc, "train.run.batch_size=8", "sampling.n=3")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_wrapped_models_run_the_blocked_head_and_prefix_sharing(random_model_dir, monkeypatch, tmp_path, parallel):
    """The trainer's wrapped model (`wrapping.wrap`) takes its log-probs through the blocked LM
    head with shared prompts, not through full logits, and its gradients are the bare model's: DDP
    computes them in its own forward (`logprobs.LogprobModel`), FSDP2 in grpo's model's forward, so
    the hooks that gather weights and reduce gradients run. (A one-rank group, with the ranks' view
    of the world patched to 2: gradients then go through autograd's accumulation, where those
    hooks sit.)"""
    import copy

    import torch.distributed as dist
    from test_logprobs import _prompt_batch

    from grpo_cli import ranks
    from grpo_cli.config import ModelConfig
    from grpo_cli.models.loading import load_model
    from grpo_cli.perf import grad_in_place, logprobs
    from grpo_cli.training import wrapping

    model = load_model(random_model_dir, ModelConfig(path=str(random_model_dir), threads=1), trainable=True)
    ids, attn, mask = _prompt_batch([5, 3], [4, 2, 6])
    weights = torch.linspace(0.5, 2.0, mask.shape[1])
    bare = copy.deepcopy(model)
    logp, _ = logprobs.sequence_logprobs(bare, ids, attn, mask, 0.9)
    (logp * weights).sum().backward()

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(ranks, "world", lambda: 2)
        wrapped = wrapping.wrap(model, parallel)
        assert not any(
            grad_in_place.accumulates_in_place(p) for p in model.parameters()
        )  # the hooks see every gradient
        heads, shared = [], []
        monkeypatch.setattr(
            logprobs, "head_logprobs", lambda *a, inner=logprobs.head_logprobs, **k: heads.append(1) or inner(*a, **k)
        )
        monkeypatch.setattr(
            logprobs.shared_prefix,
            "target_hidden",
            lambda *a, inner=logprobs.shared_prefix.target_hidden: shared.append(1) or inner(*a),
        )
        got, _ = logprobs.sequence_logprobs(wrapped, ids, attn, mask, 0.9)
        (got * weights).sum().backward()
        grads = {name: ranks.local(p.grad) for name, p in wrapped.named_parameters()}
    finally:
        dist.destroy_process_group()
    assert heads and shared
    torch.testing.assert_close(got.detach(), logp.detach())
    want = {name.removeprefix("module.model."): p.grad for name, p in bare.named_parameters()}
    assert {name.removeprefix("module.model.") for name in grads} == set(want)
    for name, g in grads.items():
        torch.testing.assert_close(g, want[name.removeprefix("module.model.")], rtol=1e-5, atol=1e-6, msg=name)
