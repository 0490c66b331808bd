"""The registries own the lists of variant names; the config checks names against them."""

from __future__ import annotations

import pytest

from grpo_cli.algorithms import advantages, loss, paradigms, schedules
from grpo_cli.algorithms.registry import Registry, UnknownName
from grpo_cli.config import Config, config_from_dict
from grpo_cli.errors import UserError


def test_registry_keeps_order_and_names_the_valid_entries():
    reg: Registry[int] = Registry("colour")
    reg.register("red")(1)

    @reg.register("blue")
    def _blue() -> int:
        return 2

    assert list(reg) == ["red", "blue"] and reg.names() == ("red", "blue") and len(reg) == 2
    assert reg["red"] == 1 and reg["blue"]() == 2 and "green" not in reg
    with pytest.raises(UnknownName, match=r"unknown colour 'green'; choose one of red, blue$"):
        reg["green"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("red")(3)


def test_the_registries_hold_the_papers_variants():
    assert loss.KL_ESTIMATORS.names() == ("k1", "k2", "k3")
    assert loss.AGGREGATIONS.names() == ("sequence", "token", "constant")
    assert loss.IMPORTANCE.names() == ("token", "sequence")
    assert advantages.SCALES.names() == ("group", "batch", "none")
    assert advantages.ADVANTAGES.names() == ("outcome", "process", "correct", "one")
    assert schedules.LR_SCHEDULES.names() == ("constant", "linear", "cosine")
    assert paradigms.ALGORITHMS.names() == ("grpo", "rft", "online_rft", "sft")


def test_paradigm_rows_follow_deepseekmath_section_5_2():
    alg = paradigms.ALGORITHMS
    # SFT: no sampling, coefficient 1; RFT: the initial model's samples; online RFT and GRPO: the policy's.
    assert (alg["sft"].samples, alg["sft"].coefficient) == (False, "one")
    assert (alg["rft"].samples, alg["rft"].on_policy, alg["rft"].coefficient) == (True, False, "correct")
    assert (alg["online_rft"].on_policy, alg["online_rft"].coefficient) == (True, "correct")
    assert (alg["grpo"].on_policy, alg["grpo"].coefficient) == (True, "advantage")
    # the advantage kind each row trains with: its coefficient, or the configured one for GRPO
    assert [alg[name].advantage("process") for name in alg] == ["process", "correct", "correct", "one"]
    assert [name for name in alg if alg[name].frozen_sampler] == ["rft"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kl_estimator", "k4", "train.loss.kl_estimator must be one of k1, k2, k3; got 'k4'"),
        ("loss_aggregation", "mean", "train.loss.aggregation must be one of sequence, token, constant"),
        ("importance", "seq", "train.loss.importance must be one of token, sequence"),
        ("advantage", "steps", "train.advantage.kind must be one of outcome, process"),
        ("scale_rewards", "std", "train.advantage.scale must be one of group, batch, none"),
        ("lr_schedule", "step", "train.optimizer.schedule must be one of constant, linear, cosine"),
    ],
)
def test_check_training_validates_names_against_the_registries(field, value, message):
    cfg = config_from_dict({"train": {field: value}})  # the old flat keys, moved to their groups
    with pytest.raises(UserError, match=message):
        cfg.check_training()


def test_check_training_validates_the_algorithm():
    with pytest.raises(UserError, match="algorithm must be one of grpo, rft, online_rft, sft; got 'ppo'"):
        Config(algorithm="ppo").check_training()
