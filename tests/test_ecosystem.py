"""Task libraries and tracked runs: reasoning-gym as data and verifier, a two-step `grpo train` on
one of its tasks through the real CLI with its rollouts read back by `grpo score` and `grpo eval
--samples`, TensorBoard events and an offline W&B run read back, `hf:` on local dataset folders."""

from __future__ import annotations

import glob
import json
import struct

import pytest
from test_cli import assert_user_error, grpo, read_jsonl

from grpo_cli.errors import UserError
from grpo_cli.pipeline.data import load_problems
from grpo_cli.pipeline.rgym import parse_spec
from grpo_cli.plugins import load_verifier

rg = pytest.importorskip("reasoning_gym")

ARITH = 'rg:basic_arithmetic?size=40&seed=0&max_terms=3&max_digits=1&operators=["+","-"]'


# ----------------------------------------------------------------------------------- reasoning-gym


def test_parse_spec():
    assert parse_spec('countdown?size=5&seed=3&min_numbers=3&operators=["+"]') == (
        "countdown",
        5,
        3,
        {"min_numbers": 3, "operators": ["+"]},
    )
    assert parse_spec("countdown") == ("countdown", 1000, 0, {})
    with pytest.raises(UserError, match="size must be an integer >= 1"):
        parse_spec("countdown?size=0")
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_spec("countdown?size")


def test_rg_problems_are_the_tasks_entries():
    problems = load_problems("rg:countdown?size=3&seed=5")
    expected = list(rg.create_dataset("countdown", size=3, seed=5))
    assert [p["prompt"] for p in problems] == [e["question"] for e in expected]
    assert [p["answer"] for p in problems] == [e["answer"] for e in expected]
    assert problems[0]["id"] == "countdown-5-00000" and problems[0]["rg_task"] == "countdown"
    assert problems[0]["metadata"]["numbers"] == expected[0]["metadata"]["numbers"]
    json.dumps(problems)  # JSON-safe: metadata tuples became lists


@pytest.mark.parametrize(
    "spec, words",
    [
        ("rg:countdwn", ["unknown reasoning-gym task 'countdwn'", "countdown"]),
        ("rg:countdown?no_such_key=1", ["refused the task config", "no_such_key"]),
        ("rg:basic_arithmetic?min_terms=0", ["refused the task config", "min_terms"]),
    ],
)
def test_rg_bad_specs_are_one_line(spec, words):
    with pytest.raises(UserError) as err:
        load_problems(spec)
    for word in words:
        assert word in str(err.value)


def test_reasoning_gym_verifier_uses_the_tasks_scorer():
    problems = load_problems("rg:countdown?size=2&seed=1")
    verifier = load_verifier("reasoning_gym", {})
    gold = problems[0]["answer"]  # an expression that reaches the target with the given numbers
    samples = [
        {**problems[0], "completion": f"Let me think.\n<answer>{gold}</answer>"},
        {**problems[0], "completion": "<answer>1 + 1</answer>"},  # well formed, wrong: countdown gives 0.05
        {**problems[0], "completion": f"Working...\n{gold}"},  # last line
        {"prompt": "What is 2 + 2?", "answer": "4", "completion": "4"},  # not a reasoning-gym row
    ]
    verdicts = verifier.verify(samples)
    assert [v.reward for v in verdicts] == [1.0, 0.05, 1.0, None]
    assert verdicts[0].info["extracted"] == gold and verdicts[0].info["task"] == "countdown"
    # The same rows after a JSON round trip (as `grpo score` reads them) score the same.
    again = verifier.verify(json.loads(json.dumps(samples)))
    assert [v.reward for v in again] == [1.0, 0.05, 1.0, None]
    with pytest.raises(UserError, match="extract must list"):
        load_verifier("reasoning_gym", {"extract": "nope"})


# ---------------------------------------------------------------------- a real run, read back


def _wandb_history(run_file: str) -> list[dict]:
    """The history rows of an offline W&B run file (a LevelDB-style log of protobuf records:
    a 7-byte header, then 32 KiB blocks of records, each with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, part, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


@pytest.fixture(scope="module")
def rg_run(random_model_dir, tmp_path_factory):
    """Two GRPO steps on reasoning-gym's basic_arithmetic, reported to TensorBoard and W&B offline."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    import os

    tmp = tmp_path_factory.mktemp("rg-run")
    old = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    try:
        proc = grpo(
            "train",
            "--model",
            str(random_model_dir),
            "--data",
            ARITH,
            "--verifier",
            "reasoning_gym",
            "--out",
            "run",
            "--steps",
            "2",
            "--threads",
            "1",
            "--log-completions",
            "1",
            "--report-to",
            "tensorboard,wandb",
            "--set",
            "data.eval=" + ARITH.replace("seed=0", "seed=1").replace("size=40", "size=4"),
            "--set",
            "sampling.n=4",
            "--set",
            "sampling.max_new_tokens=8",
            "--set",
            "train.run.batch_size=8",
            "--set",
            "train.run.eval_n=2",
            cwd=tmp,
        )
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return tmp, proc


def test_two_steps_on_a_reasoning_gym_task(rg_run):
    tmp, proc = rg_run
    run = tmp / "run"
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["accuracy"] <= 1.0 and "reward/reasoning_gym_mean" in r for r in rows)
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    assert (run / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn without --plot
    assert "held-out accuracy" in proc.stderr


def test_rollouts_are_scored_records_read_back(rg_run):
    tmp, _ = rg_run
    files = sorted((tmp / "run" / "rollouts").glob("*.jsonl"))
    assert [f.name for f in files] == ["step-000001.jsonl", "step-000002.jsonl"]
    records = read_jsonl(files[0])
    assert len(records) == 8 and [r["group"] for r in records] == [0] * 4 + [1] * 4
    for r in records:
        assert r["step"] == 1 and r["rg_task"] == "basic_arithmetic" and isinstance(r["completion"], str)
        assert set(r["rewards"]) == {"reasoning_gym"} and r["advantage"] is not None
    # Outcome advantages of a group sum to zero (group-normalised rewards).
    assert abs(sum(r["advantage"] for r in records[:4])) < 1e-4
    # grpo score re-scores them with the same verifier to the same rewards; grpo eval --samples reads them.
    grpo("score", str(files[0]), "--verifier", "reasoning_gym", "--out", "again.jsonl", cwd=tmp)
    assert [r["reward"] for r in read_jsonl(tmp / "again.jsonl")] == [r["reward"] for r in records]
    out = grpo("eval", "--samples", str(files[0]), "--k", "1,4", "--json", "--quiet", cwd=tmp).stdout
    result = json.loads(out)["results"][str(files[0])]
    assert result["problems"] == 2 and result["n"] == 4
    assert result["accuracy"] == pytest.approx(sum(r["reward"] >= 1.0 for r in records) / 8)


def test_tensorboard_scalars_read_back(rg_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _ = rg_run
    events = EventAccumulator(str(tmp / "run" / "tensorboard"))
    events.Reload()
    metrics = read_jsonl(tmp / "run" / "metrics.jsonl")
    tags = events.Tags()["scalars"]
    for key in ("reward_mean", "accuracy", "loss", "zero_std_frac", "completion_len_mean"):
        assert key in tags
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in metrics], rel=1e-6)
    held_out = [s.value for s in events.Scalars("eval/accuracy")]
    before_after = json.loads((tmp / "run" / "eval.json").read_text())
    assert held_out == pytest.approx([before_after["before"]["accuracy"], before_after["after"]["accuracy"]])


def test_wandb_offline_run_read_back(rg_run):
    tmp, _ = rg_run
    (run_file,) = glob.glob(str(tmp / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    history = [h for h in _wandb_history(run_file) if "reward_mean" in h]
    metrics = read_jsonl(tmp / "run" / "metrics.jsonl")
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["reward_mean"] for h in history] == pytest.approx([r["reward_mean"] for r in metrics])


def test_unknown_report_to_is_one_line(random_model_dir, tmp_path):
    proc = grpo("train", "--model", str(random_model_dir), "--report-to", "mlflow", cwd=tmp_path, expect=None)
    assert_user_error(proc, "train.run.report_to", "mlflow")


# ------------------------------------------------------------------------------------ hf: folders

ROWS = [{"question": "What is 1 + 2?", "answer": "3"}, {"question": "What is 2 * 3?", "answer": "6"}]


def test_hf_save_to_disk_folder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ds"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(folder))
    problems = load_problems(f"hf:{folder}:test", prompt_field="question")
    assert [(p["prompt"], p["answer"]) for p in problems] == [("What is 1 + 2?", "3")]
    assert len(load_problems(f"hf:{folder}", prompt_field="question")) == 2  # split train by default
    with pytest.raises(UserError, match="no split 'dev'"):
        load_problems(f"hf:{folder}:dev", prompt_field="question")
    single = tmp_path / "single"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(single))  # a Dataset, not a DatasetDict
    assert len(load_problems(f"hf:{single}", prompt_field="question")) == 2


def test_hf_local_files_folder_through_the_cli(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    folder = tmp_path / "jsonds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = load_problems(f"hf:{folder}", prompt_field="question")
    assert [p["answer"] for p in problems] == ["3", "6"]
    proc = grpo("eval", "--data", "hf:missing-folder-xyz", "--quiet", cwd=tmp_path, expect=None)
    assert_user_error(proc, "hf:missing-folder-xyz")
