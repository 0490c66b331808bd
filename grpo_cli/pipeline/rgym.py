"""reasoning-gym's procedural tasks as a data source: `rg:TASK[?size=N&seed=S&KEY=VALUE...]`.

Each entry `{question, answer, metadata}` of `reasoning_gym.create_dataset(TASK, size=N, seed=S, **cfg)`
becomes a problem `{id, prompt, answer, metadata, rg_task, rg_config}`; `metadata` is made
JSON-safe (tuples become lists) here, so scoring in the training process and scoring the written
records later (`grpo score`) see the same entry. The `reasoning_gym` verifier rebuilds the task
from `rg_task` / `rg_config` and calls its own `score_answer`. Needs `pip install 'grpo-cli[rg]'`.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

from grpo_cli.errors import UserError

PREFIX = "rg:"
DEFAULT_SIZE = 1000
DEFAULT_SEED = 0


def parse_spec(spec: str) -> tuple[str, int, int, dict[str, Any]]:
    """`countdown?size=200&seed=3&min_numbers=3` -> ("countdown", 200, 3, {"min_numbers": 3}).
    Values are read as YAML, so numbers, booleans and lists (`operators=["+","-"]`) work."""
    task, _, query = spec.partition("?")
    if not task:
        raise UserError(f"{PREFIX}{spec}: expected rg:TASK[?size=N&seed=S&KEY=VALUE...], e.g. rg:countdown?size=500")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"{PREFIX}{spec}: expected KEY=VALUE in the query, got {item!r}")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            options[key] = raw
    size, seed = options.pop("size", DEFAULT_SIZE), options.pop("seed", DEFAULT_SEED)
    for name, value in (("size", size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "size" else 0):
            raise UserError(f"{PREFIX}{spec}: {name} must be an integer >= {1 if name == 'size' else 0}, got {value!r}")
    return task, size, seed, options


def json_safe(value: Any) -> Any:
    """The value as it reads back from JSON (tuples -> lists, other objects -> str)."""
    return json.loads(json.dumps(value, default=str))


def load(spec: str) -> list[dict[str, Any]]:
    """The problems of `rg:SPEC` (without the prefix)."""
    task, size, seed, options = parse_spec(spec)
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise UserError(f"{PREFIX}{spec}: needs the reasoning-gym package (pip install 'grpo-cli[rg]')") from None
    if task not in DATASETS:
        close = difflib.get_close_matches(task, sorted(DATASETS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f"; {len(DATASETS)} tasks, e.g. countdown"
        raise UserError(f"{PREFIX}{spec}: unknown reasoning-gym task {task!r}{hint}")
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **options)
        entries = list(dataset)
    except (TypeError, ValueError, AssertionError) as e:  # unknown config key, failed validate()
        raise UserError(f"{PREFIX}{spec}: reasoning-gym refused the task config {options}: {e}") from None
    config = json_safe(options)
    return [
        {
            "id": f"{task}-{seed}-{i:05d}",
            "prompt": entry["question"],
            "answer": "" if entry.get("answer") is None else str(entry["answer"]),
            "metadata": json_safe(entry.get("metadata", {})),
            "rg_task": task,
            "rg_config": config,
        }
        for i, entry in enumerate(entries)
    ]
