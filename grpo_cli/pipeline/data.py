"""Problems in, records out: file formats, field mapping, prompt templates, JSONL I/O.

Problem records (docs/design.md, "Records") always have `id`, `prompt` and, when required, `answer`;
every other field of the source row is carried through untouched.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from grpo_cli.errors import UserError
from grpo_cli.records import Problem

BUILTIN_PREFIX = "arith:"


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (and dict keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    return value


def dumps_line(row: dict[str, Any]) -> str:
    """One JSONL line that is always valid UTF-8: lone surrogates (from a `\\udXXX` escape or a
    verifier's output) are written as U+FFFD instead of failing the whole write."""
    line = json.dumps(row, ensure_ascii=False)
    return _SURROGATE.sub("\ufffd", line) if _SURROGATE.search(line) else line


def read_jsonl(path: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line is a UserError naming the file and line number.

    Text that is not Unicode never stops a read: invalid UTF-8 bytes and lone-surrogate escapes
    (`"\\ud800"`) are read as U+FFFD, and `warn` (default: a Python warning) names the lines."""
    rows, replaced = [], []
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, expected a JSONL file") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                replaced.append(lineno)
            text = line.rstrip("\r\n")  # an error at the end of the text is at the end of this line
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                where = f"column {e.colno}" + (", the end of the line" if e.pos >= len(text.rstrip()) else "")
                raise UserError(f"{path} line {lineno}: invalid JSON ({e.msg} at {where})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
            if "\\u" in line and _SURROGATE.search(json.dumps(row, ensure_ascii=False)):
                row = clean_text(row)
                if not replaced or replaced[-1] != lineno:
                    replaced.append(lineno)
            rows.append(row)
    if replaced:
        lines = ", ".join(map(str, replaced[:5])) + (f" and {len(replaced) - 5} more" if len(replaced) > 5 else "")
        message = (
            f"{path} line {lines}: text that is not valid Unicode (invalid UTF-8 or a lone surrogate) read as U+FFFD"
        )
        if warn is None:
            warnings.warn(message, UnicodeWarning, stacklevel=2)
        else:
            warn(message)
    return rows


def check_writable(path: Path, what: str, *, folder: bool = False) -> None:
    """Fail now, before any work, when `path` (a file, or a folder when `folder`) could not be written
    later: a file where a folder is needed on the way, or a folder we may not create files in.
    Creates nothing (a probe file in the nearest existing folder is removed at once)."""
    if path.exists() and path.is_dir() != folder:
        found, wanted = ("a file", "a folder") if folder else ("a directory", "a file name")
        raise UserError(f"{what} {path}: is {found}; expected {wanted}")
    base = path if folder else path.parent
    existing = base
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path}: cannot be created, {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".grpo-write-check-", dir=existing)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write in {existing} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    """The process's umask, read without setting it where Linux shows it (setting it to read it
    would briefly change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """Write to a temp file beside `path` and rename on success: a failed run never leaves a
    truncated file, nor clobbers what was there before."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the mode open() would give
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path | None, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically to `path`, or to stdout when path is None or `-`; always valid UTF-8."""
    if path is None or str(path) == "-":
        import sys

        for row in rows:
            sys.stdout.write(dumps_line(row) + "\n")
        sys.stdout.flush()
        return
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(dumps_line(row) + "\n")


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
    if source.startswith("rg:"):
        from grpo_cli.pipeline import rgym

        return source, rgym.load(source[3:])
    path = Path(source)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return str(path), read_jsonl(path)
    if suffix == ".json":
        try:
            data = clean_text(json.loads(path.read_text(encoding="utf-8", errors="replace")))
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
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            return str(path), list(csv.DictReader(handle))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading Parquet needs pyarrow (pip install 'grpo-cli[parquet]')") from None
        return str(path), pq.read_table(path).to_pylist()
    raise UserError(f"{path}: unsupported data format {suffix or '(none)'}; expected .jsonl, .json, .csv or .parquet")


def _read_hf_dataset(spec: str) -> list[dict[str, Any]]:
    """`NAME[:SPLIT]`: a hub name or a local dataset folder (files `load_dataset` reads, or a
    `save_to_disk` folder, which `load_dataset` cannot read); split `train` by default."""
    name, _, split = spec.partition(":")
    split = split or "train"
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf:{spec}: reading a `datasets` dataset needs the `datasets` package installed") from None
    folder = Path(name)
    try:
        if folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise UserError(f"hf:{spec}: no split {split!r}; the folder has {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split)
    except UserError:
        raise
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
