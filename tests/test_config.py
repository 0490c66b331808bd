"""The typed config: precedence, unknown keys, type errors and coercion, every preset file, docs."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from grpo_cli import config as C
from grpo_cli.config import Config, load_config, parse_verifier_option
from grpo_cli.errors import UserError

PRESETS = Path(__file__).resolve().parents[1] / "presets"
PRESET_FILES = sorted(PRESETS.glob("*.yaml"))


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- precedence


def test_precedence_defaults_preset_set_cli(tmp_path):
    preset = _write(tmp_path / "p.yaml", {"seed": 3, "sampling": {"n": 2, "temperature": 0.5}})

    # defaults < preset: keys the preset leaves out keep the dataclass defaults
    cfg = load_config(preset)
    assert (cfg.seed, cfg.sampling.n, cfg.sampling.temperature) == (3, 2, 0.5)
    assert cfg.sampling.top_p == C.SamplingConfig().top_p
    assert cfg.train == C.TrainConfig()

    # preset < --set
    cfg = load_config(preset, ["sampling.n=4", "seed=5"])
    assert (cfg.seed, cfg.sampling.n, cfg.sampling.temperature) == (5, 4, 0.5)

    # --set < explicit CLI options; None means "option not given"
    cfg = load_config(preset, ["sampling.n=4", "seed=5"], {"sampling.n": 8, "seed": None})
    assert (cfg.seed, cfg.sampling.n, cfg.sampling.temperature) == (5, 8, 0.5)

    # a later --set wins over an earlier one
    assert load_config(preset, ["sampling.n=4", "sampling.n=16"]).sampling.n == 16


def test_default_preset_is_tiny():
    assert load_config() == load_config("tiny") == load_config(str(PRESETS / "tiny.yaml"))


def test_set_merges_into_sections_without_dropping_siblings(tmp_path):
    preset = _write(tmp_path / "p.yaml", {"data": {"prompt_field": "question", "answer_field": "solution"}})
    cfg = load_config(preset, ["data.answer_field=answer"])
    assert (cfg.data.prompt_field, cfg.data.answer_field) == ("question", "answer")


# ----------------------------------------------------------------------------- errors and coercion


def test_unknown_nested_key_names_the_nearest_dotted_key():
    with pytest.raises(UserError) as e:
        load_config(None, ["sampling.temprature=0.5"])
    assert "sampling.temprature" in str(e.value)
    assert "did you mean 'sampling.temperature'" in str(e.value)


def test_unknown_top_level_key_and_section():
    with pytest.raises(UserError, match="did you mean 'seed'"):
        load_config(None, ["sed=1"])
    with pytest.raises(UserError, match="did you mean 'sampling'"):
        load_config(None, ["sampleing.n=1"])


def test_unknown_key_in_preset_file_names_the_file(tmp_path):
    preset = _write(tmp_path / "bad.yaml", {"eval": {"kk": [1]}})
    with pytest.raises(UserError) as e:
        load_config(preset)
    assert "bad.yaml" in str(e.value) and "did you mean 'eval.k'" in str(e.value)


@pytest.mark.parametrize(
    "item, words",
    [
        ("sampling.n=abc", ["sampling.n", "integer"]),
        ("sampling.n=2.5", ["sampling.n", "integer"]),
        ("sampling.temperature=hot", ["sampling.temperature", "number"]),
        ("train.filtering.dynamic_sampling=maybe", ["train.filtering.dynamic_sampling", "true or false"]),
        ("eval.k=[1, x]", ["eval.k[1]", "integer"]),
        ("sampling=3", ["sampling", "mapping"]),
        ("sampling.temperature=-1", ["sampling.temperature", ">= 0"]),
        ("model.dtype=float8", ["model.dtype", "float32"]),
        ("nokeyvalue", ["KEY=VALUE"]),
    ],
)
def test_type_errors_are_one_line(item, words):
    with pytest.raises(UserError) as e:
        load_config(None, [item])
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_scientific_notation_string_becomes_float(tmp_path):
    # YAML 1.1 reads `1e-6` (no dot) as a string; the config accepts it as a float.
    assert yaml.safe_load("lr: 1e-6")["lr"] == "1e-6"
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  lr: 1e-6\n", encoding="utf-8")
    cfg = load_config(str(preset))
    assert cfg.train.optimizer.lr == pytest.approx(1e-6) and isinstance(cfg.train.optimizer.lr, float)
    assert load_config(None, ["train.optimizer.lr=3e-5"]).train.optimizer.lr == pytest.approx(3e-5)
    assert isinstance(load_config(None, ["sampling.temperature=1"]).sampling.temperature, float)


def test_set_comma_list():
    cfg = load_config(None, ["eval.k=1,2"])
    assert cfg.eval.k == [1, 2]
    assert load_config(None, ["eval.k=[1, 4]"]).eval.k == [1, 4]
    assert load_config(None, ["eval.metrics=pass@k"]).eval.metrics == ["pass@k"]


def test_set_string_field_takes_the_text_as_written():  # `--set data.template=[1, 2]` is that text
    # YAML would read "Answer as: #### N" as a mapping {"Answer as": None} (`#` starts a comment).
    cfg = load_config(None, ["data.instruction=Answer as: #### N", "data.system_prompt=[not a list]"])
    assert cfg.data.instruction == "Answer as: #### N"
    assert cfg.data.system_prompt == "[not a list]"
    # a quoted value is still YAML, so escapes work; other fields are still parsed
    cfg = load_config(None, ['data.template="Q: {prompt}\\n"', "sampling.n=4", "train.run.report_to=[]"])
    assert cfg.data.template == "Q: {prompt}\n"
    assert cfg.sampling.n == 4 and cfg.train.run.report_to == []


def test_a_list_for_a_string_field_in_a_preset_is_one_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("data:\n  template: [1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"data.template must be a string") as e:
        load_config(str(preset))
    assert "\n" not in str(e.value)


def test_report_to_defaults_to_auto_which_never_warns(tmp_path, monkeypatch):
    import builtins

    from grpo_cli.report import Reporter
    from grpo_cli.training.tracking import Trackers

    assert load_config().train.run.report_to == ["auto"]
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    warned: list[str] = []
    report = Reporter()
    monkeypatch.setattr(report, "warn", warned.append)
    trackers = Trackers(load_config(), tmp_path, report)  # auto, tensorboard missing: nothing, silently
    trackers.close()
    assert warned == [] and not (tmp_path / "tensorboard").exists()
    with pytest.raises(UserError, match="tensorboard is not installed"):
        Trackers(load_config(None, ["train.run.report_to=[tensorboard]"]), tmp_path, report)


def test_k_larger_than_n_is_an_error():
    with pytest.raises(UserError, match=r"eval.k=8 > eval.n=4"):
        load_config(None, ["eval.n=4", "eval.k=1,8"])


def test_sample_group_size_need_not_divide_the_train_batch():
    # `grpo sample --n 3` must work; only training needs whole groups in a batch.
    cfg = load_config(None, [], {"sampling.n": 3})
    assert cfg.sampling.n == 3
    with pytest.raises(UserError, match="multiple of sampling.n=3"):
        cfg.check_training()


def test_bool_and_dict_values():
    cfg = load_config(
        None, ["train.filtering.dynamic_sampling=true", "verifiers=[{name: math, options: {timeout: 2}}]"]
    )
    assert cfg.train.filtering.dynamic_sampling is True
    assert cfg.verifiers == [C.VerifierConfig(name="math", options={"timeout": 2})]


# ----------------------------------------------------------------------------- presets


def test_preset_names_are_the_preset_files():
    assert PRESET_FILES, "no preset files found"
    assert C.preset_names() == sorted(p.stem for p in PRESET_FILES)  # "a-b" sorts before "a.yaml" as a path


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.name)
def test_every_preset_file_loads_and_validates(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    by_name = load_config(path.stem)
    by_path = load_config(str(path))
    assert by_name == by_path
    assert isinstance(by_name, Config)
    # The resolved config round-trips through its YAML dump (what is written beside outputs).
    assert C.config_from_dict(yaml.safe_load(C.dump_config(by_name))) == by_name
    # A preset's first line is a comment: `grpo presets list` shows it as the description.
    assert path.read_text(encoding="utf-8").startswith("#")


def _flat_keys(data: dict, leaves: set[str], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in leaves:
            keys |= _flat_keys(value, leaves, dotted + ".")
        else:
            keys.add(dotted)
    return keys


def test_tiny_preset_states_every_key():
    documented = {key for key, _, _ in C.documented_keys()}
    stated = _flat_keys(yaml.safe_load((PRESETS / "tiny.yaml").read_text(encoding="utf-8")), documented)
    missing, unknown = sorted(documented - stated), sorted(stated - documented)
    assert not missing, f"presets/tiny.yaml does not state: {', '.join(missing)}"
    assert not unknown, f"presets/tiny.yaml states keys the config does not have: {', '.join(unknown)}"
    # every verifier entry states every verifier field
    data = yaml.safe_load((PRESETS / "tiny.yaml").read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(C.VerifierConfig)}
    for entry in data["verifiers"]:
        assert set(entry) == fields


# ----------------------------------------------------------------------------- old flat train keys

# TrainConfig's fields before they were grouped by concern (train.beta, train.lr, ...).
OLD_FLAT_TRAIN_FIELDS = """
steps batch_size micro_batch_size micro_batch_tokens gradient_checkpointing mu lr warmup_steps lr_schedule
weight_decay adam_betas max_grad_norm beta kl_estimator eps_low eps_high importance loss_aggregation scale_rewards
advantage correct_threshold dynamic_sampling max_sampling_rounds overlong_filter soft_overlong overlong_cache
ref_sync_every out_dir save_every keep_last log_completions report_to eval_n eval_limit eval_every log_every
rollout_correction rollout_correction_cap parallel
""".split()


def test_flat_train_table_maps_every_old_field_to_one_grouped_field():
    table = C.FLAT_TRAIN_KEYS
    assert sorted(table) == sorted(OLD_FLAT_TRAIN_FIELDS)  # every old field, each once
    grouped = {
        f"{group.name}.{leaf.name}"
        for group in dataclasses.fields(C.TrainConfig)
        if group.name not in ("reward_model", "lora")
        for leaf in dataclasses.fields(typing.get_type_hints(C.TrainConfig)[group.name])
    } - {"run.eval_after"}  # newer than the flat table: no old name to keep
    assert sorted(table.values()) == sorted(grouped)  # onto every grouped field, none twice


@pytest.mark.parametrize(
    "flat, nested",
    [
        ("train.beta=0.1", "train.loss.beta=0.1"),
        ("train.loss_aggregation=token", "train.loss.aggregation=token"),
        ("train.advantage=process", "train.advantage.kind=process"),
        ("train.lr=3e-5", "train.optimizer.lr=3e-5"),
        ("train.out_dir=somewhere/else", "train.run.out_dir=somewhere/else"),
    ],
)
def test_a_flat_set_gives_the_same_config_as_the_grouped_one(flat, nested):
    assert load_config(None, [flat]) == load_config(None, [nested])
    assert load_config(None, ["train.beta=0.1"]).train.loss.beta == 0.1
    # the CLI's dotted overrides take the flat names too
    assert load_config(None, None, {"train.steps": 7}).train.run.steps == 7


def test_a_later_flat_set_overrides_an_earlier_grouped_one():
    assert load_config(None, ["train.loss.beta=0.2", "train.beta=0.3"]).train.loss.beta == 0.3
    assert load_config(None, ["train.beta=0.3", "train.loss.beta=0.2"]).train.loss.beta == 0.2


def test_an_old_style_preset_still_loads(tmp_path):
    # The tiny preset written the old way: every grouped key flat under `train:` with the same value.
    tiny = yaml.safe_load((PRESETS / "tiny.yaml").read_text(encoding="utf-8"))
    flat = {k: v for k, v in tiny["train"].items() if k in ("reward_model", "lora")}
    for old, new in C.FLAT_TRAIN_KEYS.items():
        group, leaf = new.split(".")
        flat[old] = tiny["train"][group][leaf]
    old_style = _write(tmp_path / "old.yaml", {**tiny, "train": flat})
    assert load_config(old_style) == load_config("tiny")
    # and the resolved config written beside outputs is the grouped form
    dumped = yaml.safe_load(C.dump_config(load_config(old_style)))["train"]
    assert set(dumped) == {"run", "optimizer", "loss", "advantage", "filtering", "reward_model", "lora"}
    # a hand-written one from before, with comments and an inline reward model
    (tmp_path / "mine.yaml").write_text(
        "train:\n  lr: 1.0e-6\n  beta: 0.04  # KL\n  advantage: process\n  scale_rewards: none\n"
        "  steps: 3\n  reward_model:\n    retrain_every: 2\n",
        encoding="utf-8",
    )
    t = load_config(str(tmp_path / "mine.yaml")).train
    assert (t.optimizer.lr, t.loss.beta, t.advantage.kind, t.advantage.scale, t.run.steps) == (
        1e-6,
        0.04,
        "process",
        "none",
        3,
    )
    assert t.reward_model.retrain_every == 2


def test_a_flat_key_beside_its_grouped_place_is_an_error(tmp_path):
    both = _write(tmp_path / "both.yaml", {"train": {"beta": 0.1, "loss": {"beta": 0.2}}})
    with pytest.raises(UserError, match=r"train.beta and train.loss.beta both set; keep train.loss.beta"):
        load_config(both)


def test_an_unknown_train_key_names_the_nearest_grouped_key():
    with pytest.raises(UserError, match=r"unknown key 'train.betaa' \(did you mean 'train.loss.beta'\?\)"):
        load_config(None, ["train.betaa=0.1"])
    with pytest.raises(UserError, match=r"unknown key 'train.loss.bta' \(did you mean 'train.loss.beta'\?\)"):
        load_config(None, ["train.loss.bta=0.1"])


def test_help_defaults_read_flat_and_grouped_keys():
    assert C.default_value("train.steps") == C.default_value("train.run.steps") == "500"


def test_preset_errors():
    with pytest.raises(UserError, match="unknown preset 'tinny'.*did you mean 'tiny'"):
        load_config("tinny")
    with pytest.raises(UserError, match="preset file not found"):
        load_config("no/such/file.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nsampling: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(str(bad))


# ----------------------------------------------------------------------------- docs and verifier option


def _config_classes(cls: type = Config) -> list[type]:
    found = [cls]
    for tp in typing.get_type_hints(cls).values():
        for candidate in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(candidate) and candidate not in found:
                found += [c for c in _config_classes(candidate) if c not in found]
    return found


def test_field_docs_cover_every_field_of_every_config_class():
    classes = _config_classes()
    assert {c.__name__ for c in classes} >= {
        "Config",
        "ModelConfig",
        "DataConfig",
        "SamplingConfig",
        "VerifierConfig",
        "EvalConfig",
        "TrainConfig",
    }
    for cls in classes:
        docs = C.field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name, "").strip(), f"{cls.__name__}.{f.name} has no docstring"


def test_documented_keys_are_dotted_leaves_with_docs():
    rows = C.documented_keys()
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys))
    assert {"seed", "sampling.temperature", "eval.k", "train.optimizer.lr", "verifiers"} <= set(keys)
    assert all(doc for _, _, doc in rows)


def test_parse_verifier_option():
    spec = parse_verifier_option("math:weight=0.5,timeout=3")
    assert spec == C.VerifierConfig(name="math", weight=0.5, options={"timeout": 3})
    assert parse_verifier_option("math") == C.VerifierConfig(name="math")
    spec = parse_verifier_option("math:extract=[boxed, hash],rel_tol=1e-4,unit='a,b',hang_timeout=5")
    assert spec.options == {"extract": ["boxed", "hash"], "rel_tol": 1e-4, "unit": "a,b"}
    assert spec.hang_timeout == 5
    assert parse_verifier_option("code:failure_value=-1,all_or_nothing=true").options == {"all_or_nothing": True}
    with pytest.raises(UserError, match="expected key=value"):
        parse_verifier_option("math:weight")
    with pytest.raises(UserError, match="verifier.weight must be a number"):
        parse_verifier_option("math:weight=heavy")
