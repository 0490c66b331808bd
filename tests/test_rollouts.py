"""What the model wrote (grpo_cli.training.rollouts): the rollout files and the random few of the
rewarded samples a run leaves for a reader to check for cheats."""

from __future__ import annotations

import json

from grpo_cli.training import rollouts


def _rows(rewards: list) -> list[dict]:
    return [{"completion": f"c{i}", "reward": r} for i, r in enumerate(rewards)]


def test_rewarded_sample_takes_only_positive_rewards_in_their_order():
    rows = _rows([0.0, 1.0, 0.5, -1.0, None, 1.0, 0])
    assert [r["completion"] for r in rollouts.rewarded_sample(rows, 20, seed=0)] == ["c1", "c2", "c5"]
    two = rollouts.rewarded_sample(rows, 2, seed=0)
    assert len(two) == 2 and two == rollouts.rewarded_sample(rows, 2, seed=0)  # seeded
    assert [rows.index(r) for r in two] == sorted(rows.index(r) for r in two)
    assert rollouts.rewarded_sample(_rows([0, -1, None]), 20, seed=0) == []


def test_rewarded_sample_reads_each_text_once_per_prompt():
    rows = [
        {"prompt": "p1", "completion": "same", "reward": 1.0},
        {"prompt": "p1", "completion": "same", "reward": 1.0},  # a converged group repeats itself
        {"prompt": "p2", "completion": "same", "reward": 1.0},  # the same text for another prompt: new
        {"prompt": "p1", "completion": "other", "reward": 1.0},
    ]
    drawn = rollouts.rewarded_sample(rows, 20, seed=0)
    assert [(r["prompt"], r["completion"]) for r in drawn] == [("p1", "same"), ("p2", "same"), ("p1", "other")]


def test_rewarded_sample_draws_across_the_whole_run():
    rows = _rows([1.0] * 1000)
    picks = {tuple(r["completion"] for r in rollouts.rewarded_sample(rows, 20, seed=s)) for s in range(3)}
    assert len(picks) == 3  # the seed decides
    drawn = rollouts.rewarded_sample(rows, 20, seed=0)
    assert len(drawn) == 20 and int(drawn[-1]["completion"][1:]) > 500  # not the first 20


def test_write_rewarded_reads_every_rollout_file(tmp_path):
    rollouts.write(tmp_path, 1, _rows([0.0, 1.0]), group_size=2)  # type: ignore[arg-type]
    rollouts.write(tmp_path, 2, _rows([1.0, 0.0]), group_size=2)  # type: ignore[arg-type]
    path = rollouts.write_rewarded(tmp_path, seed=0)
    assert path == tmp_path / rollouts.REWARDED
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["completion"]) for r in rows] == [(1, "c1"), (2, "c0")]


def test_nothing_rewarded_writes_no_file(tmp_path):
    rollouts.write(tmp_path, 1, _rows([0.0, 0.0]), group_size=2)  # type: ignore[arg-type]
    assert rollouts.write_rewarded(tmp_path, seed=0) is None
    assert rollouts.write_rewarded(tmp_path / "sft-run", seed=0) is None  # no rollouts at all
    assert not (tmp_path / rollouts.REWARDED).exists()
