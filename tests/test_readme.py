"""Every `grpo ...` command in the README's bash blocks runs, in README order in one folder, with
cheap overrides appended (fewer problems, shorter completions, two training steps): a command that
drifts from the CLI, names a file that an earlier command does not write, or names a checkpoint the
default run does not keep fails here."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
from test_cli import grpo

README = Path(__file__).resolve().parents[1] / "README.md"

CHEAP = {
    "sample": ["--set", "data.limit=2", "--set", "sampling.max_new_tokens=4", "--threads", "1"],
    "score": [],
    "presets": [],
    "verifiers": [],
    "data": ["--n-train", "20", "--n-test", "5"],
    "model": ["--steps", "2", "--threads", "1"],
    "rm": ["--epochs", "1", "--threads", "1"],
    "eval": ["--set", "data.limit=2", "--set", "sampling.max_new_tokens=4", "--threads", "1"],
    "train": [
        "--steps",
        "2",
        "--set",
        "data.limit=4",
        "--set",
        "sampling.n=2",
        "--set",
        "sampling.max_new_tokens=4",
        "--set",
        "train.run.batch_size=4",
        "--set",
        "train.run.micro_batch_size=4",
        "--set",
        "train.run.eval_n=1",
        "--set",
        "train.run.eval_limit=2",
        "--threads",
        "1",
    ],
}
"""Overrides appended to each README command, by subcommand (a later option wins over the README's)."""

NEEDS = {"sampling.backend=vllm": "vllm"}
"""A command holding this text runs only where the module is installed (an optional extra)."""

CHECKPOINT = re.compile(r"checkpoints/step-(\d+)$")
ROLLOUT = re.compile(r"rollouts/step-\d+\.jsonl$")


def readme_commands(text: str) -> list[list[str]]:
    """The `grpo` commands of the bash blocks, as argument lists: continuation lines joined,
    comments dropped, `a && grpo b` chains split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        variables: dict[str, str] = {}  # `NAME='...'` lines of the block, expanded in later commands
        for line in block.replace("\\\n", " ").splitlines():
            if m := re.fullmatch(r"([A-Z_]+)=(.*)", line.strip()):
                variables[m.group(1)] = shlex.split(m.group(2))[0]
                continue
            for name, value in variables.items():
                line = line.replace("$" + name, value.replace('"', '\\"'))  # used inside "..."
            words = shlex.split(line, comments=True)
            segment: list[str] = []
            for word in [*words, "&&"]:
                if word != "&&":
                    segment.append(word)
                    continue
                if segment[:1] == ["grpo"]:
                    commands.append(segment[1:])
                segment = []
    return commands


def kept_steps() -> set[int]:
    """The checkpoint steps the default `grpo train` leaves on disk."""
    from grpo_cli.config import load_config

    t = load_config().train.run
    saved = sorted({s for s in range(1, t.steps + 1) if t.save_every and s % t.save_every == 0} | {t.steps})
    return set(saved[-t.keep_last :])


def setup_inputs(folder: Path, model: Path) -> None:
    """The files the README's "your model, your data" examples name, in those formats."""
    for name in ("Qwen2.5-0.5B-Instruct", "my-sft-model", "SmolLM2-135M-Instruct"):
        shutil.copytree(model, folder / name)
    # A real chat model has thousands of positions (reasoning-gym's prompts are long in bytes); the
    # random model's RoPE has no position table, so only its declared limit needs raising.
    config = json.loads((folder / "SmolLM2-135M-Instruct" / "config.json").read_text())
    config["max_position_embeddings"] = 8192
    (folder / "SmolLM2-135M-Instruct" / "config.json").write_text(json.dumps(config))
    gsm8k = [
        {"question": f"Tom has {a} apples and buys {a}. How many?", "answer": f"{a} + {a}\n#### {2 * a}"}
        for a in (3, 4)
    ]
    math = [{"problem": f"What is {a} squared?", "solution": f"It is $\\boxed{{{a * a}}}$."} for a in (2, 3, 5, 6)]
    for name, rows in (("gsm8k_test.jsonl", gsm8k), ("math_train.jsonl", math), ("math_test.jsonl", math[:2])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.slow
def test_readme_commands_run(tmp_path, random_model_dir):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 8 and ["train"] in commands  # the parser found the blocks
    setup_inputs(tmp_path, random_model_dir)
    ran = []
    kept_by: dict[str, set[int]] = {}  # run folder -> the checkpoint steps the README's run keeps
    for args in commands:
        sub = args[0]
        assert sub in CHEAP, f"README command `grpo {shlex.join(args)}`: add its cheap overrides to CHEAP"
        missing = [module for text, module in NEEDS.items() if text in " ".join(args)]
        if missing and importlib.util.find_spec(missing[0]) is None:
            continue
        for i, arg in enumerate(args):
            if m := CHECKPOINT.search(arg):
                # The README names a checkpoint of its full run; the cheap run keeps its own.
                run = arg[: arg.index("/checkpoints/")]
                assert int(m.group(1)) in kept_by.get(run, set()), (
                    f"{arg}: that run keeps {sorted(kept_by.get(run, ()))}"
                )
                args = [*args[:i], str(sorted((tmp_path / run / "checkpoints").glob("step-*"))[-1]), *args[i + 1 :]]
        if sub == "train":
            out = args[args.index("--out") + 1] if "--out" in args else "runs/train"
            steps = int(args[args.index("--steps") + 1]) if "--steps" in args else None
            kept_by[out] = kept_steps() if steps is None else {steps}  # a run always keeps its last step
        for i, arg in enumerate(args):
            if m := ROLLOUT.search(arg):  # a step of the README's run: the cheap run's last one
                found = sorted((tmp_path / arg).parent.glob("step-*.jsonl"))
                assert found, f"{arg}: the README's earlier commands wrote no rollouts there"
                args = [*args[:i], str(found[-1]), *args[i + 1 :]]
        if sub == "train" and "--out" not in args and "--resume" not in args:
            shutil.rmtree(tmp_path / "runs" / "train", ignore_errors=True)  # each README run is a run of its own
        start = time.perf_counter()
        grpo(*args, *CHEAP[sub], cwd=tmp_path)
        ran.append(sub)
        print(f"{time.perf_counter() - start:.1f} s: grpo {shlex.join(args)}")
    assert {"sample", "score", "eval", "train"} <= set(ran)
