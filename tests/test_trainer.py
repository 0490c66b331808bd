"""The GRPO loop end to end on a tiny random model: it learns, accumulation equals one big batch,
options do what they say, and a run killed with SIGKILL resumes to exactly the same result."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from grpo_cli.config import load_config
from grpo_cli.report import Reporter
from grpo_cli.training.batch import Batch
from grpo_cli.training.recorder import TIMING_KEYS, no_signal_advice, step_status
from grpo_cli.training.trainer import train
from grpo_cli.training.update import policy_update

# A verifier whose reward varies on random text: the fraction of digit characters in the completion.
PLUGIN = textwrap.dedent(
    """
    from grpo_verifiers import Verdict, Verifier

    class Digits(Verifier):
        name = "digits"

        def verify(self, samples):
            out = []
            for s in samples:
                text = s["completion"]
                out.append(Verdict(sum(c.isdigit() for c in text) / max(len(text), 1)))
            return out

    class Broken(Verifier):
        name = "nanny"

        def verify(self, samples):
            return [Verdict(float("nan")) for _ in samples]
    """
)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "digits_verifier.py").write_text(PLUGIN)
    info = root / "digits_verifier-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: digits-verifier\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[grpo.verifiers]\ndigits = digits_verifier:Digits\nnanny = digits_verifier:Broken\n"
    )
    monkeypatch.syspath_prepend(str(root))
    return root


def small_config(model_dir: Path, out_dir: Path, *extra: str):
    sets = [
        "model.threads=1",
        "data.limit=40",
        "sampling.n=4",
        "sampling.max_new_tokens=8",
        "train.run.batch_size=8",
        "train.run.micro_batch_size=4",
        "train.run.steps=3",
        "train.optimizer.lr=1e-3",
        "train.run.eval_n=0",
        "verifiers=[{name: digits}]",
        *extra,
    ]
    return load_config(None, sets, {"model.path": str(model_dir), "train.run.out_dir": str(out_dir)})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_training_changes_the_weights_and_logs_every_step(random_model_dir, plugin_dir, tmp_path):
    cfg = small_config(random_model_dir, tmp_path / "run", "train.loss.beta=0.04")  # a reference model, so KL is logged
    result = train(cfg, Reporter())
    before, after = weights(random_model_dir), weights(result.last_checkpoint)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "reward_mean",
        "reward/digits_mean",
        "zero_std_frac",
        "kl",
        "clip_frac",
        "entropy",
        "completion_len_mean",
        "truncated_frac",
        "tokens_per_s",
        "step_time",
        "verifier_failures",
    ):
        assert key in rows[0], key
    # The checkpoint is a loadable Hugging Face folder with the resolved config beside the weights.
    ckpt = result.last_checkpoint
    assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer.json").is_file()
    assert "digits" in (ckpt / "config.yaml").read_text()


def test_keep_last_prunes_old_checkpoints(random_model_dir, plugin_dir, tmp_path):
    cfg = small_config(
        random_model_dir, tmp_path / "run", "train.run.save_every=1", "train.run.keep_last=2", "train.loss.beta=0"
    )
    train(cfg, Reporter())
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]


def test_existing_run_needs_resume(random_model_dir, plugin_dir, tmp_path):
    from grpo_cli.errors import UserError

    cfg = small_config(random_model_dir, tmp_path / "run", "train.run.steps=1", "train.loss.beta=0")
    train(cfg, Reporter())
    with pytest.raises(UserError, match="--resume"):
        train(cfg, Reporter())


def test_beta_zero_loads_no_reference_model(random_model_dir, plugin_dir, tmp_path, monkeypatch):
    import grpo_cli.training.session as session

    copies = []
    real = session.load_frozen
    monkeypatch.setattr(session, "load_frozen", lambda cfg, path: copies.append(1) or real(cfg, path))
    train(small_config(random_model_dir, tmp_path / "a", "train.loss.beta=0", "train.run.steps=1"), Reporter())
    assert copies == []
    train(small_config(random_model_dir, tmp_path / "b", "train.loss.beta=0.1", "train.run.steps=1"), Reporter())
    assert copies == [1]


def test_nan_rewards_cost_only_their_samples(random_model_dir, plugin_dir, tmp_path):
    cfg = small_config(
        random_model_dir,
        tmp_path / "run",
        "verifiers=[{name: digits}, {name: nanny, failure_value: 0.0}]",
        "train.run.steps=1",
    )
    result = train(cfg, Reporter())
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["verifier_failures"] == 8  # every sample of the nan verifier, counted
    assert (row["failures/nanny"], row["failures/digits"], row["timeouts/nanny"]) == (8, 0, 0)
    assert all(torch.isfinite(v).all() for v in weights(result.last_checkpoint).values())


def test_dynamic_sampling_is_counted(random_model_dir, plugin_dir, tmp_path):
    # A verifier weighted 0 gives every sample reward 0 whatever the model writes (a random model is
    # right by chance now and then): every group has zero reward variance, so dynamic sampling drops
    # them all, tries its bounded rounds, and skips the update.
    cfg = small_config(
        random_model_dir,
        tmp_path / "run",
        "verifiers=[{name: math, weight: 0.0}]",
        "train.filtering.dynamic_sampling=true",
        "train.filtering.max_sampling_rounds=2",
        "train.run.steps=1",
    )
    train(cfg, Reporter())
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["sampling_rounds"] == 2
    assert row["groups_dropped"] == 4  # 2 prompts per round x 2 rounds
    assert row["skipped"] == 1


def _rollouts(run: Path, step: int) -> list[dict]:
    return [json.loads(line) for line in (run / "rollouts" / f"step-{step:06d}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", ["rft", "online_rft", "sft"])
def test_unified_paradigm_algorithms_train_on_their_own_data(random_model_dir, plugin_dir, tmp_path, algorithm):
    """DeepSeekMath 5.2.1: RFT samples from the initial model, online RFT from the policy, both with
    gradient coefficient 1 on correct samples (reward >= threshold) and 0 otherwise; SFT trains on the
    dataset's solutions and samples nothing."""
    run = tmp_path / "run"
    extra = [
        "train.run.steps=2",
        "train.advantage.correct_threshold=0.1",
        "train.run.log_completions=1",
        "train.optimizer.lr=1e-2",
    ]
    result = train(small_config(random_model_dir, run, f"algorithm={algorithm}", *extra), Reporter())
    before, after = weights(random_model_dir), weights(result.last_checkpoint)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["skipped_updates"] == 0 for r in rows), rows
    if algorithm == "sft":
        # every token trains with coefficient 1 and ratio 1: loss -1, whose gradient is the NLL's
        assert all(r["loss"] == pytest.approx(-1.0) for r in rows), rows
        assert not (run / "rollouts").exists() and "reward_mean" not in rows[0]  # nothing sampled or scored
        # what SFT minimizes is shown instead: the solutions' NLL, which a step at lr 1e-2 lowers
        assert rows[1]["nll"] < rows[0]["nll"], rows
        assert step_status(rows[0]).startswith(f"nll {rows[0]['nll']:.3f}")
        return
    # ratio 1 (mu = 1), sequence aggregation: loss = -mean_i(c_i), minus the fraction of correct samples
    assert all(r["loss"] == pytest.approx(-r["advantage_abs_mean"]) for r in rows), rows
    for step in (1, 2):
        records = _rollouts(run, step)
        assert records and all(r["advantage"] == float(r["reward"] >= 0.1) for r in records)
    paid = [r for step in (1, 2) for r in _rollouts(run, step) if r["reward"] > 0]
    if paid:  # what the reward paid for, a random 20 of it, for a reader to check for cheats
        rewarded = [json.loads(line) for line in (run / "rewarded-samples.jsonl").read_text().splitlines()]
        assert len(rewarded) == min(20, len(paid)) and all(r in paid for r in rewarded)
    else:
        assert not (run / "rewarded-samples.jsonl").exists()
    # Step 2 samples with step 2's seed. RFT's sampler is the initial model, so its samples are those
    # of a run whose policy never moves (lr 0); online RFT's come from the policy trained at step 1.
    frozen = tmp_path / "frozen"
    train(small_config(random_model_dir, frozen, "algorithm=online_rft", *extra, "train.optimizer.lr=0"), Reporter())
    same = [r["completion"] for r in _rollouts(run, 2)] == [r["completion"] for r in _rollouts(frozen, 2)]
    assert same == (algorithm == "rft")


def _batch(model_dir: Path) -> Batch:
    """4 sequences of unequal completion lengths, random advantages."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (4, 10), generator=g)
    attn = torch.ones(4, 10, dtype=torch.long)
    loss_mask = torch.zeros(4, 9, dtype=torch.bool)
    for i, (start, length) in enumerate([(2, 7), (3, 2), (4, 5), (1, 8)]):
        loss_mask[i, start : start + length] = True
    return Batch(ids, attn, loss_mask, torch.zeros(4, 9), torch.randn(4, generator=g))


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_micro_batches_equal_one_big_batch(random_model_dir, aggregation):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    ref = copy.deepcopy(base).requires_grad_(False)
    results = []
    for micro in (4, 1):
        cfg = load_config(
            None,
            [
                f"train.run.micro_batch_size={micro}",
                f"train.loss.aggregation={aggregation}",
                "train.loss.beta=0.1",
                "train.optimizer.max_grad_norm=0",
                "sampling.max_new_tokens=8",
            ],
        )
        model = copy.deepcopy(base)
        # SGD with lr 1: the weight change is exactly minus the accumulated gradient.
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
        stats = policy_update(model, ref, _batch(random_model_dir), cfg, opt, sched)
        assert all(p.grad is None for p in model.parameters())  # freed after the step, not held until the next
        results.append((model.state_dict(), stats))
    (big, big_stats), (small, small_stats) = results
    for name in big:
        torch.testing.assert_close(big[name], small[name], rtol=1e-5, atol=1e-6)
    assert big_stats["loss"] == pytest.approx(small_stats["loss"], rel=1e-5, abs=1e-7)
    assert big_stats["kl"] == pytest.approx(small_stats["kl"], rel=1e-5, abs=1e-7)


def _run_cli(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "grpo_cli", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# Algorithm 1 in the loop: an outcome RM bootstrapped from the model (labels: digits reward >= 0.2),
# retrained every 2 steps with a replay; it rewards the policy, and resume must restore its weights,
# optimizer, replay buffer and the iteration's samples so far.
WITH_RM = [
    "train.reward_model.path=bootstrap",
    "train.reward_model.kind=orm",
    "train.reward_model.retrain_every=2",
    "train.reward_model.bootstrap_prompts=4",
    "train.reward_model.held_out_prompts=2",
    "train.reward_model.batch_size=4",
    "train.advantage.correct_threshold=0.2",
]


@pytest.mark.parametrize(
    "extra", [[], pytest.param(WITH_RM, marks=pytest.mark.slow)], ids=["verifiers", "reward_model"]
)
def test_sigkill_and_resume_gives_the_same_weights_and_metrics(random_model_dir, plugin_dir, tmp_path, extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    common = [
        "--model",
        str(random_model_dir),
        "--threads",
        "1",
        "--steps",
        "6",
        "--quiet",
        "--set",
        "data.limit=40",
        "--set",
        "sampling.n=4",
        "--set",
        "sampling.max_new_tokens=8",
        "--set",
        "train.run.batch_size=8",
        "--set",
        "train.run.micro_batch_size=4",
        "--set",
        "train.optimizer.lr=1e-3",
        "--set",
        "train.run.save_every=1",
        "--set",
        "train.run.mu=2",
        "--set",
        "train.loss.ref_sync_every=2",
        "--set",
        "train.loss.beta=0.04",
        "--set",
        "train.run.eval_n=2",
        "--set",
        "train.run.eval_limit=4",
        "--set",
        "verifiers=[{name: digits}]",
        *(x for setting in extra for x in ("--set", setting)),
    ]
    whole = _run_cli(["--out", str(tmp_path / "whole"), *common], env)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err

    # Kill the second run as soon as its third checkpoint appears (mid-run, between any two writes).
    cut = tmp_path / "cut"
    victim = _run_cli(["--out", str(cut), *common], env)
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "step-000003").exists():
        assert victim.poll() is None, victim.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert not (cut / "checkpoints" / "step-000006").exists()
    resumed = _run_cli(["--resume", str(cut), "--quiet"], env)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err

    a, b = weights(tmp_path / "whole" / "checkpoints" / "step-000006"), weights(cut / "checkpoints" / "step-000006")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if extra:  # the reward model too, and it did change along the way
        ra, rb = (weights(run / "checkpoints" / "step-000006" / "reward_model") for run in (tmp_path / "whole", cut))
        assert all(torch.equal(ra[k], rb[k]) for k in ra)
        start = weights(tmp_path / "whole" / "reward_model" / "initial")
        assert any(not torch.equal(start[k], ra[k]) for k in ra)

    def rows(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]

    assert rows(tmp_path / "whole") == rows(cut)
    assert json.loads((tmp_path / "whole" / "eval.json").read_text()) == json.loads((cut / "eval.json").read_text())


def test_disk_full_on_checkpoint_skips_it_then_stops_cleanly(random_model_dir, plugin_dir, tmp_path, monkeypatch):
    import errno

    import grpo_cli.training.checkpoint as checkpoint
    from grpo_cli.errors import UserError

    calls = []

    def full(state, path):  # the trainer state is written last; fail every time after the first
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        torch.save(state, path)

    monkeypatch.setattr(checkpoint, "_save_state", full)
    cfg = small_config(random_model_dir, tmp_path / "run", "train.run.save_every=1", "train.loss.beta=0")
    with pytest.raises(UserError, match="No space left on device.*last good checkpoint: .*step-000001"):
        train(cfg, Reporter())
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-000001"]  # no half-written folder left behind
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # steps 2 and 3 ran although their checkpoints were skipped


def test_model_without_tokenizer_is_a_clear_error(random_model_dir, plugin_dir, tmp_path):
    import shutil

    from grpo_cli.errors import UserError

    bare = tmp_path / "bare"
    shutil.copytree(random_model_dir, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(UserError, match="no tokenizer"):
        train(small_config(bare, tmp_path / "run"), Reporter())


def test_prompt_longer_than_the_model_is_a_clear_error(random_model_dir, plugin_dir, tmp_path):
    from grpo_cli.errors import UserError

    with pytest.raises(UserError, match="exceeds the model's 256 positions"):
        train(small_config(random_model_dir, tmp_path / "run", "sampling.max_new_tokens=250"), Reporter())


def test_skipping_zero_advantage_rows_changes_nothing(random_model_dir):
    """With beta = 0 the rows whose advantage is 0 are not run at all; the update must be the one a
    full pass gives (beta = 1e-12 forces the full pass, its KL term is negligible)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    ref = copy.deepcopy(base).requires_grad_(False)
    batch = _batch(random_model_dir)
    batch.advantages = torch.tensor([0.0, 1.5, 0.0, -1.5])
    results = []
    for beta in ("0", "1e-12"):
        cfg = load_config(
            None,
            [
                "train.run.micro_batch_size=1",
                f"train.loss.beta={beta}",
                "train.optimizer.max_grad_norm=0",
                "train.loss.aggregation=token",
                "sampling.max_new_tokens=8",
            ],
        )
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
        policy_update(model, ref if beta != "0" else None, batch, cfg, opt, sched)
        results.append(model.state_dict())
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(results[0][k], base.state_dict()[k]) for k in results[0])


def test_lr_multiplier_warmup_then_schedules():
    from grpo_cli.algorithms.schedules import lr_multiplier

    # warmup 2 of 6 steps: 1/2, 2/2, then the 4 post-warmup steps at progress 0, 1/4, 2/4, 3/4
    assert [lr_multiplier(i, 2, 6, "constant") for i in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [lr_multiplier(i, 2, 6, "linear") for i in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    # cosine: (1 + cos(pi * p)) / 2 at p = 0, 1/4, 1/2, 3/4 -> 1, 0.8536, 0.5, 0.1464
    cos = [lr_multiplier(i, 2, 6, "cosine") for i in range(6)]
    assert cos[:3] == [0.5, 1.0, 1.0]
    assert cos[3:] == pytest.approx([0.853553, 0.5, 0.146447], abs=1e-6)
    assert lr_multiplier(0, 0, 4, "linear") == 1.0


def test_gradient_checkpointing_and_token_budget_give_the_same_run(random_model_dir, plugin_dir, tmp_path):
    runs = {}
    for name, extra in {
        "plain": [],
        "lean": ["train.run.gradient_checkpointing=true", "train.run.micro_batch_tokens=40"],
    }.items():
        cfg = small_config(random_model_dir, tmp_path / name, "train.run.steps=2", *extra)
        result = train(cfg, Reporter())
        runs[name] = weights(result.last_checkpoint)
    assert runs["plain"].keys() == runs["lean"].keys()
    for key in runs["plain"]:
        torch.testing.assert_close(runs["plain"][key], runs["lean"][key], rtol=1e-4, atol=1e-6)


def test_the_progress_line_shows_what_a_user_watches():
    row = {"step": 3, "reward_mean": 0.375, "accuracy": 0.375, "kl": 0.00123, "grad_norm": 0.1746, "loss": 6e-9,
           "zero_std_frac": 0.6875, "tokens_per_s": 7721.8, "step_time": 0.97}  # fmt: skip
    assert step_status(row) == (
        "reward 0.375  acc 37.5%  kl 0.0012  gnorm 0.175  no-signal 69%  7722 tok/s  0.97 s/step"
    )  # no surrogate loss: with mu = 1 it is 0 by construction
    sft = {"step": 1, "loss": -1.0, "nll": 2.5, "grad_norm": 1.0, "tokens_per_s": 100.0, "step_time": 2.0}
    assert (
        step_status({**sft, "eval_accuracy": 0.42}) == "nll 2.500  gnorm 1.000  100 tok/s  2.00 s/step  held-out 42.0%"
    )


def test_a_run_without_signal_is_told_once_what_to_change():
    assert no_signal_advice([1.0] * 9) is None  # too early to judge
    assert no_signal_advice([0.5] * 10) is None  # half the groups still teach
    advice = no_signal_advice([0.0] * 5 + [0.6] * 10)  # the last 10 steps: 60%
    assert advice.startswith("60% of groups had equal rewards") and "train.filtering.dynamic_sampling" in advice
    on = no_signal_advice([0.6] * 10, dynamic_sampling=True)  # not told to set what is already on
    assert on.startswith("60% of groups") and "dynamic_sampling=true" not in on and "sampling.temperature" in on
