"""benchmarks/learning.py's bookkeeping, worked by hand: a staged run's (minutes, accuracy) points, the value
at a mark, the table, and the TRL side's training clock. Nothing is trained or timed against a goal."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_script import load

learning = load("learning")


def test_points_of_a_staged_run_sum_step_times_across_stages():
    stages = {
        "accuracy_before": 0.05,
        "stages": [{"name": "sft", "accuracy_after": 0.70}, {"name": "grpo", "accuracy_after": 0.82}],
    }
    sft = [{"step": 1, "step_time": 60.0}, {"step": 2, "step_time": 60.0, "eval_accuracy": 0.4}, {"step": 3}]
    grpo = [{"step": 1, "step_time": 90.0, "eval_accuracy": 0.75}, {"step": 2, "step_time": 30.0}]
    points = learning.grpo_points(stages, [sft, grpo])
    # 0 -> 0.05; after 120 s the eval row: 2 min; SFT ends at 2 min (its last row has no step_time);
    # GRPO's eval row at 120 + 90 = 210 s = 3.5 min; its end at 240 s = 4 min.
    assert points == [(0.0, 0.05), (2.0, 0.4), (2.0, 0.70), (3.5, 0.75), (4.0, 0.82)]


def test_a_stage_without_an_after_evaluation_adds_no_end_point():
    stages = {"accuracy_before": 0.1, "stages": [{"name": "sft", "accuracy_after": None}]}
    assert learning.grpo_points(stages, [[{"step_time": 30.0}]]) == [(0.0, 0.1)]


def test_value_at_takes_the_last_point_up_to_the_mark_and_its_slack():
    points = [(0.0, 0.1), (9.8, 0.5), (10.4, 0.6), (19.0, 0.7), (26.0, 0.8)]
    assert learning.value_at(points, 10.0) == 0.6  # 10.4 is within half a minute
    assert learning.value_at(points, 10.0, slack=0.0) == 0.5
    assert learning.value_at(points, 20.0) == 0.7
    assert learning.value_at(points, 30.0) == 0.8  # the run ended before the mark: its last point
    assert learning.value_at([(5.0, 0.3)], 1.0) is None
    # points read back from learning.json are lists, in any order
    assert learning.value_at([[26.0, 0.8], [0.0, 0.1]], 10.0) == 0.1


def test_marks_table_prints_percentages_and_gaps():
    lines = learning.marks_table({"grpo": [(0.0, 0.1), (12.0, 0.725)], "trl:mirror": [(15.0, 0.5)]}, (10.0, 20.0))
    assert lines[0].split() == ["10", "min", "20", "min"]
    assert lines[1].split() == ["grpo", "10.0%", "72.5%"]
    assert lines[2].split() == ["trl:mirror", "-", "50.0%"]


def test_training_clock_excludes_saves_and_carries_minutes_across_trainers(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(learning.time, "perf_counter", lambda: now[0])
    clock = learning.TrainingClock(tmp_path, every=1.0)
    assert clock.minutes() == 0.0
    clock.started = now[0]
    now[0] += 90.0  # 1.5 minutes of training
    saved = []

    class Model:
        def save_pretrained(self, folder: Path) -> None:
            saved.append(folder.name)
            now[0] += 30.0  # a save takes half a minute: not training time

    class Tokenizer:
        def save_pretrained(self, folder: Path) -> None:
            pass

    clock.save(Model(), Tokenizer())
    assert saved == ["min-001.50"]
    assert clock.minutes() == pytest.approx(1.5)
    now[0] += 60.0
    assert clock.minutes() == pytest.approx(2.5)
    clock.spent, clock.started = clock.minutes(), None  # the trainer ended
    now[0] += 600.0  # between trainers: no training
    assert clock.minutes() == pytest.approx(2.5)


def test_clock_callback_saves_every_interval_and_stops_at_the_budget(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(learning.time, "perf_counter", lambda: now[0])
    saved = []

    class Model:
        def save_pretrained(self, folder: Path) -> None:
            saved.append(folder.name)

    class Tokenizer:
        def save_pretrained(self, folder: Path) -> None:
            pass

    class Control:
        should_training_stop = False

    clock = learning.TrainingClock(tmp_path, every=2.0)
    callback = clock.callback(until=5.0, tokenizer=Tokenizer())
    callback.on_train_begin()
    control = Control()
    for _ in range(7):  # a step a minute
        now[0] += 60.0
        callback.on_step_end(None, None, control, model=Model())
        if control.should_training_stop:
            break
    callback.on_train_end()
    assert saved == ["min-002.00", "min-004.00"]
    assert control.should_training_stop and clock.minutes() == pytest.approx(5.0)


def test_trl_reward_function_pays_through_our_verifier_and_not_a_restatement():
    from grpo_cli.config import load_config
    from grpo_cli.pipeline.scoring import opened_verifiers

    trl_side = load("trl_side")
    prompt = "What is 3 + 4 * 2?"
    with opened_verifiers(load_config("smollm2").verifiers) as verifiers:
        reward = trl_side.math_reward(verifiers)
        paid = reward(
            prompts=[prompt] * 3,
            completions=["4 * 2 = 8\n3 + 8 = 11\n#### 11", "#### 14", f"{prompt} 3 + 4 * 2 = N"],
            answer=["11"] * 3,
            id=["a", "a", "a"],
        )
    assert paid == [1.0, 0.0, 0.0]
    assert reward.__name__ == "math_reward"  # TRL's logged reward column
