"""Learned reward models: the math (AUC, replay, labels), `grpo rm train` through the real CLI on the
arithmetic task with the shipped model as the base (ORM and PRM, both heads, resume, bad input), and
the trained folder loading into the `prm` verifier."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import assert_user_error, grpo

from grpo_cli.builtin import arith
from grpo_cli.models.loading import tiny_model_dir
from grpo_cli.training import reward_model as rmod
from grpo_cli.training.checkpoint import load_state


def test_auc_counts_ordered_pairs():
    # good steps 0.35, 0.8; bad 0.1, 0.4: pairs (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4.
    assert rmod.binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # a tie counts a half: good 0.5 vs bad 0.5 -> 1/2.
    assert rmod.binary_auc([0.5, 0.5], [1, 0]) == 0.5
    assert rmod.binary_auc([0.2, 0.9], [1, 1]) != rmod.binary_auc([0.2, 0.9], [1, 1])  # NaN: one class only


def test_replay_takes_ten_percent_of_the_history():
    history = [rmod.Example("q", "1", f"c{i}", str(i), [1]) for i in range(40)]
    picked = rmod.replay_sample(history, 0.1, random.Random(0))
    assert len(picked) == 4 and len({id(e) for e in picked}) == 4  # 0.1 x 40, without replacement
    assert all(e in history for e in picked)
    assert rmod.replay_sample([], 0.1, random.Random(0)) == []


def test_step_labels_stop_being_good_after_the_first_wrong_step():
    completion = "4 * 5 = 20\n3 + 20 = 24\n24 - 2 = 22\n#### 22"
    ends = [len("4 * 5 = 20"), completion.index("\n24"), completion.index("\n####"), len(completion)]
    record = {"completion": completion, "steps": [{"end": e, "reward": r} for e, r in zip(ends, [1.0, 0.0, 1.0, 0.0])]}
    assert rmod.labels_from_steps(record) == [1, 0, 0, 0]  # 24 - 2 = 22 holds, but after a wrong step
    record["steps"] = record["steps"][1:]  # the first line unscored: no label for it
    assert rmod.labels_from_steps(record) == [None, 0, 0, 0]


def test_rollout_labels_are_math_shepherds_hard_estimate():
    record = {"completion": "4 * 5 = 20\n3 + 20 = 24\n#### 24", "answer": "23", "reward": 0.0, "group": 0}
    asked = []

    def rollout(records, prefixes):  # a continuation from the first line reaches 23, not from the second
        asked.extend(prefixes)
        return [p.endswith("= 20\n") for p in prefixes]

    (example,) = rmod.label_records([record], "prm", "rollouts", gold=[], rollout=rollout)
    assert asked == ["4 * 5 = 20\n", "4 * 5 = 20\n3 + 20 = 24\n"]  # every step but the last
    assert example.labels == [1, 0, 0]  # the last step's label is the sample's own outcome


@pytest.mark.slow
def test_rm_train_with_rollouts_through_the_cli(tmp_path):
    rows = [
        {"id": "a", "prompt": "What is 4 * 5 + 3?", "answer": "23", "completion": c, "group": 0, "index": i}
        for i, c in enumerate(["4 * 5 = 20\n20 + 3 = 23\n#### 23", "4 * 5 = 21\n21 + 3 = 24\n#### 24"])
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grpo_long(
        "rm", "train", "s.jsonl", "--rollouts", "2", "--held-out", "0", "--out", "rm", "--threads", "1", cwd=tmp_path
    )
    result = json.loads((tmp_path / "rm" / "eval.json").read_text())
    assert result["train_examples"] == 2 and result["updates"] == 1 and result["after"] == {}


def test_tag_loss_class_order():
    # math_shepherd logits are (+, -): a good step wants index 0; qwen's (bad, good): index 1.
    logits = torch.tensor([[5.0, -5.0]])
    assert float(rmod.tag_loss(logits, torch.tensor([1]), "math_shepherd")) < 1e-3
    assert float(rmod.tag_loss(logits, torch.tensor([1]), "qwen")) > 5


def test_initial_reward_model_is_reproducible(tmp_path):
    for name in ("a", "b"):
        rmod.build_initial(tiny_model_dir(), tmp_path / name, style="qwen", kind="prm", seed=3)
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "score.weight" in a  # the 2-class head
    meta = json.loads((tmp_path / "a" / "reward_model.json").read_text())
    assert meta["style"] == "qwen" and meta["kind"] == "prm"


def _samples(tmp_path: Path) -> Path:
    """Scored samples of the arithmetic task: each problem's gold solution and a copy with one step's
    result off by tens (the next lines unchanged), scored by `grpo score --verifier prm`."""
    rows = []
    for i, p in enumerate(arith.generate(48, seed=5)):
        lines = p["solution"].split("\n")
        rng = random.Random(i)
        k = rng.randrange(len(lines) - 1)
        wrong = list(lines)
        lhs, value = wrong[k].rsplit("= ", 1)
        wrong[k] = f"{lhs}= {int(value) + rng.choice([23, -41, 37, 55])}"
        for index, text in enumerate(("\n".join(lines), "\n".join(wrong))):
            rows.append({**p, "completion": text, "group": i, "index": index})
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grpo("score", "samples.jsonl", "--verifier", "prm", "--out", "scored.jsonl", "--quiet", cwd=tmp_path)
    return tmp_path / "scored.jsonl"


RM_ARGS = ["--threads", "1", "--quiet", "--epochs", "6", "--lr", "1e-3", "--held-out", "0.25"]
RM_ARGS += ["--set", "train.reward_model.batch_size=8"]


def grpo_long(*args: str, cwd: Path) -> None:
    """`grpo ARGS` for the runs that train (test_cli's helper allows 120 s; a shared CPU needs more)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"grpo {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"


@pytest.mark.slow
def test_rm_train_prm_and_orm_load_into_the_prm_verifier(tmp_path):
    _samples(tmp_path)
    grpo_long("rm", "train", "scored.jsonl", "--out", "prm", *RM_ARGS, cwd=tmp_path)
    result = json.loads((tmp_path / "prm" / "eval.json").read_text())
    after = result["after"]
    assert after["steps"] > 20
    # Better than chance on the held-out problems' steps: 0.715 measured (0.5 = chance), and more
    # accurate than always answering the majority label.
    assert after["auc"] > 0.65 and after["accuracy"] > after["majority"], result
    # The folder scores straight through `grpo score --verifier prm:backend=hf,...`.
    flag = result["verifier"]
    grpo_long("score", "scored.jsonl", "--verifier", flag, "--out", "rescored.jsonl", "--quiet", cwd=tmp_path)
    rescored = [json.loads(line) for line in (tmp_path / "rescored.jsonl").read_text().splitlines()]
    assert all(r["steps"] and all(0.0 <= s["reward"] <= 1.0 for s in r["steps"]) for r in rescored)

    grpo_long("rm", "train", "scored.jsonl", "--out", "orm", "--kind", "orm", *RM_ARGS[:-2], cwd=tmp_path)
    orm = json.loads((tmp_path / "orm" / "eval.json").read_text())
    assert orm["kind"] == "orm" and "split=tag" in orm["verifier"] and orm["after"]["steps"] > 0


@pytest.mark.slow
def test_rm_train_resumes_to_the_same_weights(tmp_path):
    _samples(tmp_path)
    args = ["scored.jsonl", *RM_ARGS, "--epochs", "2", "--style", "qwen", "--save-every", "5"]
    grpo_long("rm", "train", *args, "--out", "whole", cwd=tmp_path)
    # A run cut after its first checkpoint: only that checkpoint and its metrics rows survive.
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-000005", cut / "checkpoints" / "step-000005")
    rows = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("\n".join(rows[:6]) + "\n")  # one row past the checkpoint
    grpo_long("rm", "train", *args, "--out", "cut", "--resume", cwd=tmp_path)
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (cut / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()


def test_rm_train_bad_input_is_one_line(tmp_path):
    row = {"prompt": "What is 1 + 2?", "answer": "3", "completion": "1 + 2 = 3\n#### 3", "group": 0}
    (tmp_path / "raw.jsonl").write_text(json.dumps(row) + "\n")
    proc = grpo("rm", "train", "raw.jsonl", "--out", "x", "--quiet", cwd=tmp_path, expect=2)
    assert_user_error(proc, "raw.jsonl row 1", "step rewards")  # a PRM from samples without steps
    (tmp_path / "orm.jsonl").write_text(json.dumps({**row, "reward": 1.0}) + "\n")
    rmod.build_initial(tiny_model_dir(), tmp_path / "qwen-rm", style="qwen", kind="orm", seed=0)
    proc = grpo("rm", "train", "orm.jsonl", "--kind", "orm", "--base", "qwen-rm", "--out", "y", cwd=tmp_path, expect=2)
    assert_user_error(proc, "qwen-rm", "style")  # a qwen head asked to train as math_shepherd
    proc = grpo("train", "--set", "train.reward_model.replay_fraction=1.5", "--dry-run", cwd=tmp_path, expect=2)
    assert_user_error(proc, "train.reward_model.replay_fraction", "[0, 1]")


@pytest.fixture
def iterative_run(tmp_path):
    """`grpo train --preset deepseekmath-iterative` cut to 4 steps of 4 prompts x 8: 2 iterations."""
    sets = [
        "train.reward_model.retrain_every=2",
        "train.loss.ref_sync_every=2",
        "train.run.batch_size=32",
        "sampling.max_new_tokens=48",
        "train.reward_model.bootstrap_prompts=8",
        "train.reward_model.held_out_prompts=4",
        "train.run.eval_n=0",
        "train.run.save_every=2",
    ]
    args = ["train", "--preset", "deepseekmath-iterative", "--out", "run", "--steps", "4", "--threads", "1", "--quiet"]
    grpo_long(*args, *(x for s in sets for x in ("--set", s)), cwd=tmp_path)
    return tmp_path / "run"


@pytest.mark.slow
def test_iterative_rl_retrains_the_rm_with_a_ten_percent_replay(iterative_run):
    rows = [json.loads(line) for line in (iterative_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    first, second = rows[1], rows[3]
    assert "rm/loss" not in rows[0] and first["rm/iteration"] == 1 and second["rm/iteration"] == 2
    # Iteration 1 has no history; iteration 2 replays 10% of iteration 1's 64 labelled samples.
    assert first["rm/replayed"] == 0 and first["rm/new_examples"] == 64
    assert second["rm/replayed"] == round(0.1 * first["rm/buffer"]) == 6
    assert second["rm/buffer"] == 128
    assert {"rm/held_out_accuracy", "rm/held_out_auc"} <= second.keys()
    # The reward is the RM's; the math verifier's true reward is logged beside it.
    assert all(r["reward_mean"] == r["reward/prm_mean"] and "reward/math_mean" in r for r in rows)
    # The RM's weights change from the start to iteration 1 and again to iteration 2.
    ckpts = iterative_run / "checkpoints"
    start, one, two = (
        load_file(str(p / "model.safetensors"))
        for p in (
            iterative_run / "reward_model" / "initial",
            ckpts / "step-000002" / "reward_model",
            ckpts / "step-000004" / "reward_model",
        )
    )
    assert any(not torch.equal(start[k], one[k]) for k in start)
    assert any(not torch.equal(one[k], two[k]) for k in one)
    state = load_state(ckpts / "step-000004").extra["reward_model"]
    assert len(state["history"]) == 128 and state["iteration"] == 2 and state["pending"] == []
