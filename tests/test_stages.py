"""A preset's `stages:` (docs/design.md, "Stages"): validated when the config loads, each stage's config
resolved as preset < stage set < the user's --set and options < the user's `--set stages.NAME.KEY`,
chained to the previous stage's final checkpoint, listed by --dry-run, trained in order by one
`grpo train`, and skipped once finished when the staged run is resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_cli import assert_user_error, grpo, read_config

from grpo_cli.config import base_config, config_layers, load_config, stage_configs, stages_preset
from grpo_cli.errors import UserError
from grpo_cli.training.stages import chain

TWO_STAGES = """\
# two stages: an SFT warm-up, then GRPO from its result
model: {threads: 1}
sampling: {n: 4, max_new_tokens: 12}
train:
  run: {batch_size: 16, micro_batch_size: 16, eval_limit: 8, eval_n: 1, report_to: [], out_dir: run}
  optimizer: {lr: 1.0e-5}
stages:
  - name: sft
    set: {algorithm: sft, train.run.steps: 2, train.optimizer.lr: 1.0e-3}
  - name: grpo
    set: {algorithm: grpo, train.steps: 2, sampling.temperature: 0.8}
"""


def _preset(tmp_path: Path, text: str = TWO_STAGES) -> str:
    path = tmp_path / "staged.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _with_stages(tmp_path: Path, stages: str) -> str:
    return _preset(tmp_path, "# bad\nseed: 0\nstages:\n" + stages)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("stages", "words"),
    [
        ("  - {name: a, set: {train.foo: 1}}\n", ["staged.yaml", "stages[0].set", "unknown key 'train.foo'"]),
        ("  - {name: a, set: {}}\n  - {name: a, set: {}}\n", ["stages[1].name", "duplicate", "'a'"]),
        ("  - {name: a}\n", ["stages[0].set", "missing"]),
        ("  - {name: 'a b', set: {}}\n", ["stages[0].name", "identifier"]),
        ("  - {name: a, set: [1]}\n", ["stages[0].set", "mapping"]),
        ("  - {name: a, set: {}, steps: 3}\n", ["stages[0]", "unknown key 'steps'"]),
        ("  - {name: a, set: {sampling.n: abc}}\n", ["stages[0].set", "sampling.n must be an integer"]),
        ("  - {name: a, set: {train.out_dir: x}}\n", ["stages[0].set", "train.run.out_dir is set per stage"]),
        ("  - {name: a, set: {}}\n  - {name: b, set: {model.path: x}}\n", ["stages[1].set", "model.path"]),
        ("  - {name: a, set: {train.steps: 2, train.run.steps: 3}}\n", ["stages[0].set", "both set"]),
        ("  []\n", ["stages", "non-empty list"]),
    ],
)
def test_a_bad_stage_is_a_one_line_error_naming_the_preset_and_entry(tmp_path, stages, words):
    with pytest.raises(UserError) as e:
        load_config(_with_stages(tmp_path, stages))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "staged.yaml")), message
    for word in words:
        assert word in message, message


def test_set_may_address_only_a_stage_the_preset_has(tmp_path):
    with pytest.raises(UserError, match="no stage named 'rl'.*its stages: sft, grpo"):
        config_layers(_preset(tmp_path), ["stages.rl.seed=1"])
    with pytest.raises(UserError, match="no stage named 'sft'.*it has no stages"):
        config_layers("tiny", ["stages.sft.seed=1"])
    with pytest.raises(UserError, match="unknown key 'train.foo'"):
        config_layers(_preset(tmp_path), ["stages.sft.train.foo=1"])


def test_a_preset_without_stages_resolves_as_before():
    layers = config_layers("tiny", ["train.steps=5"], {"seed": 3})
    assert layers.stages == [] and stage_configs(layers) == []
    cfg = load_config("tiny", ["train.steps=5"], {"seed": 3})
    assert (cfg.train.run.steps, cfg.seed) == (5, 3)


# ----------------------------------------------------------------------------- resolution order


def test_stage_set_overrides_the_base_and_the_user_wins_over_the_stage(tmp_path):
    preset = _preset(tmp_path)
    # base lr 1e-5; sft sets 1e-3; grpo leaves it: 1e-5
    (sft, a), (grpo_, b) = stage_configs(config_layers(preset))
    assert (sft, grpo_) == ("sft", "grpo")
    assert (a.algorithm, a.train.optimizer.lr, a.train.run.steps, a.sampling.temperature) == ("sft", 1e-3, 2, 1.0)
    assert (b.algorithm, b.train.optimizer.lr, b.train.run.steps, b.sampling.temperature) == ("grpo", 1e-5, 2, 0.8)
    assert (a.train.run.out_dir, b.train.run.out_dir) == ("run/1-sft", "run/2-grpo")
    # the user's --set and options beat every stage's set; `stages.NAME.KEY` beats them for that stage
    sets = ["train.optimizer.lr=2e-4", "stages.grpo.train.run.steps=7", "stages.grpo.sampling.temperature=0.5"]
    (_, a), (_, b) = stage_configs(config_layers(preset, sets, {"train.steps": 4, "train.out_dir": "elsewhere"}))
    assert (a.train.optimizer.lr, a.train.run.steps, a.sampling.temperature) == (2e-4, 4, 1.0)
    assert (b.train.optimizer.lr, b.train.run.steps, b.sampling.temperature) == (2e-4, 7, 0.5)
    assert (a.train.run.out_dir, b.train.run.out_dir) == ("elsewhere/1-sft", "elsewhere/2-grpo")


def test_later_stages_start_from_the_previous_final_checkpoint(tmp_path):
    configs = stage_configs(config_layers(_preset(tmp_path), None, {"model.path": "tiny", "train.steps": 3}))
    (_, a), (_, b) = chain(configs)
    assert a.model.path == "tiny"
    assert b.model.path == str(Path("run/1-sft/checkpoints/step-000003"))
    assert configs[1][1].model.path == "tiny"  # chain copies


def test_the_written_plan_resolves_to_the_same_stages(tmp_path):
    """A staged run's config.yaml (what --resume reads) alone gives each stage the config it ran with."""
    layers = config_layers(_preset(tmp_path), ["stages.grpo.seed=9", "sampling.n=2"], {"train.steps": 3})
    configs = stage_configs(layers)

    plan = tmp_path / "plan.yaml"
    plan.write_text("# plan\n" + yaml.safe_dump(stages_preset(base_config(layers), configs)), encoding="utf-8")
    assert stage_configs(config_layers(str(plan))) == configs


# ----------------------------------------------------------------------------- the command


def test_dry_run_lists_each_stage_resolved(tmp_path):
    out = grpo("train", "--preset", _preset(tmp_path), "--dry-run", "--set", "stages.sft.seed=4", cwd=tmp_path).stdout
    assert "# stage 1: sft\n" in out and "# stage 2: grpo\n" in out
    first, second = (yaml.safe_load(part) for part in out.split("# stage 2: grpo\n"))
    assert (first["algorithm"], first["seed"], second["algorithm"], second["seed"]) == ("sft", 4, "grpo", 0)
    assert second["model"]["path"] == str(Path("run/1-sft/checkpoints/step-000002"))


def test_presets_show_a_staged_preset(tmp_path):
    preset = _preset(tmp_path)
    assert grpo("presets", "show", preset, cwd=tmp_path).stdout == TWO_STAGES
    assert "# stage 2: grpo" in grpo("presets", "show", preset, "--resolved", cwd=tmp_path).stdout
    assert "sampling.temperature (float)" in grpo("presets", "show", preset, "--docs", cwd=tmp_path).stdout


def test_a_bad_stage_fails_train_with_one_line(tmp_path):
    preset = _with_stages(tmp_path, "  - {name: a, set: {train.foo: 1}}\n")
    assert_user_error(grpo("train", "--preset", preset, "--dry-run", cwd=tmp_path, expect=None), "stages[0].set")


@pytest.mark.slow
def test_two_stages_train_chained_and_resume_skips_finished(tmp_path):
    preset = _preset(tmp_path)
    first = grpo("train", "--preset", preset, cwd=tmp_path)
    out = first.stdout + first.stderr
    run = tmp_path / "run"
    sft_ckpt = run / "1-sft" / "checkpoints" / "step-000002"
    assert sft_ckpt.is_dir() and (run / "2-grpo" / "checkpoints" / "step-000002").is_dir()
    second = read_config(run / "2-grpo" / "config.yaml")
    assert second.model.path == str(Path("run/1-sft/checkpoints/step-000002"))
    assert read_config(run / "1-sft" / "config.yaml").algorithm == "sft"
    record = json.loads((run / "stages.json").read_text(encoding="utf-8"))
    assert [(s["name"], s["steps"], s["done"]) for s in record["stages"]] == [("sft", 2, True), ("grpo", 2, True)]
    assert record["stages"][1]["before"] == record["stages"][0]["after"]  # not evaluated again
    assert record["accuracy_before"] is not None and record["accuracy_after"] is not None
    assert "held-out accuracy" in out and "2: grpo" in out

    # the second stage unfinished: resume skips the first and trains the second afresh
    record["stages"] = record["stages"][:1]
    (run / "stages.json").write_text(json.dumps(record), encoding="utf-8")
    sft_metrics = (run / "1-sft" / "metrics.jsonl").read_text(encoding="utf-8")
    import shutil

    shutil.rmtree(run / "2-grpo")
    proc = grpo("train", "--resume", "run", cwd=tmp_path)
    assert "stage 1: sft finished earlier" in proc.stderr + proc.stdout
    assert (run / "1-sft" / "metrics.jsonl").read_text(encoding="utf-8") == sft_metrics
    assert (run / "2-grpo" / "checkpoints" / "step-000002").is_dir()
    names = [s["name"] for s in json.loads((run / "stages.json").read_text(encoding="utf-8"))["stages"]]
    assert names == ["sft", "grpo"]


def test_a_middle_stage_may_skip_its_after_evaluation(tmp_path):
    no_after = TWO_STAGES.replace("train.run.steps: 2,", "train.run.steps: 1, train.run.eval_after: false,")
    preset = _preset(tmp_path, no_after)
    proc = grpo("train", "--preset", preset, "--set", "stages.grpo.train.steps=1", cwd=tmp_path)
    record = json.loads((tmp_path / "run" / "stages.json").read_text(encoding="utf-8"))
    sft, grpo_stage = record["stages"]
    assert sft["before"] is not None and sft["after"] is None and grpo_stage["before"] is None
    assert record["accuracy_before"] == sft["before"]["accuracy"]
    assert record["accuracy_after"] == grpo_stage["after"]["accuracy"]
    assert (proc.stdout + proc.stderr).count("eval (after)") == 1  # the last stage only
