"""Problems in, records out: file formats, field mapping, prompt templates, JSONL I/O.

Problem records (docs/design.md, "Records") always have `id`, `prompt` and, when required, `answer`;
every other field of the source row is carried through untouched.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from grpo_cli.errors import UserError
from grpo_cli.records import Problem

BUILTIN_PREFIX = "arith:"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is a UserError naming the file and line number."""
    rows = []
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, expected a JSONL file") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """Write to a temp file beside `path` and rename on success: a failed run never leaves a
    truncated file, nor clobbers what was there before."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path | None, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically to `path`, or to stdout when path is None or `-`."""
    if path is None or str(path) == "-":
        import sys

        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_rows(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Rows of a file or dataset, with a label used in error messages."""
    if source.startswith(BUILTIN_PREFIX):
        from grpo_cli.builtin import arith

        split = source[len(BUILTIN_PREFIX) :]
        if split not in arith.SPLITS:
            raise UserError(
                f"unknown built-in split {source!r}; expected one of "
                + ", ".join(BUILTIN_PREFIX + s for s in arith.SPLITS)
            )
        return source, arith.load_split(split)
    if source.startswith("hf:"):
        return source, _read_hf_dataset(source[3:])
    path = Path(source)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return str(path), read_jsonl(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
        if isinstance(data, dict):  # {"data": [...]} or {"split": [...]}: take the single list inside
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise UserError(f"{path}: expected a JSON list of objects (or an object holding one list)")
            data = lists[0]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a JSON list of objects")
        return str(path), data
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return str(path), list(csv.DictReader(handle))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading Parquet needs pyarrow (pip install 'grpo-cli[parquet]')") from None
        return str(path), pq.read_table(path).to_pylist()
    raise UserError(f"{path}: unsupported data format {suffix or '(none)'}; expected .jsonl, .json, .csv or .parquet")


def _read_hf_dataset(spec: str) -> list[dict[str, Any]]:
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf:{spec}: reading a `datasets` dataset needs the `datasets` package installed") from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many types; the user needs the message
        raise UserError(f"hf:{spec}: could not load dataset ({str(e).splitlines()[0]})") from None
    return [dict(r) for r in ds]


def load_problems(
    source: str,
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    id_field: str = "id",
    need_answer: bool = True,
    limit: int = 0,
) -> list[Problem]:
    """Load problems and map their fields to `id`, `prompt`, `answer` (docs/design.md, "Records")."""
    label, rows = _read_rows(source)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise UserError(f"{label}: no problems found")
    problems = []
    for i, row in enumerate(rows):
        where = f"{label} row {i + 1}"
        if prompt_field not in row:
            raise UserError(
                f"{where}: missing prompt field '{prompt_field}' (data.prompt_field); fields present: "
                f"{', '.join(map(str, row))}"
            )
        prompt = row[prompt_field]
        if not _valid_prompt(prompt):
            raise UserError(f"{where}: field '{prompt_field}' must be a string or a list of {{role, content}} messages")
        problem = dict(row)
        problem["prompt"] = prompt
        if answer_field in row and row[answer_field] is not None:
            problem["answer"] = str(row[answer_field])
        elif need_answer:
            raise UserError(
                f"{where}: missing answer field '{answer_field}' (data.answer_field); fields present: "
                f"{', '.join(map(str, row))}"
            )
        problem["id"] = str(row.get(id_field, i))
        problems.append(problem)
    return problems


def _valid_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)


def render_prompt(
    problem: dict[str, Any],
    tokenizer: Any,
    *,
    template: str = "{prompt}\n",
    chat_template: str = "auto",
    system_prompt: str = "",
    instruction: str = "",
) -> str:
    """The text the model continues: the tokenizer's chat template when it has one (and
    `chat_template` is auto), else `template` filled with the problem's fields."""
    prompt = problem["prompt"]
    use_chat = chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    if use_chat:
        if isinstance(prompt, list):
            messages = list(prompt)
        else:
            content = prompt + (f"\n{instruction}" if instruction else "")
            messages = [{"role": "user", "content": content}]
        if system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, list):
        prompt = "\n".join(str(m["content"]) for m in prompt)
    try:
        return template.format_map({**problem, "prompt": prompt})
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"data.template {template!r}: cannot fill it for problem {problem.get('id')} ({e!r})") from None
