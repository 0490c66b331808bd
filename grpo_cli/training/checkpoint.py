"""Checkpoints in Hugging Face format, written atomically, the last N kept.

A checkpoint is `checkpoints/step-000010/`: the model (`save_pretrained`), its tokenizer, the
resolved `config.yaml`, and `trainer_state.pt` (optimizer, RNG and data-order state, step), plus
`ref/` when iterative RL has replaced the reference model, and `reward_model/` when a learned reward
model is being trained alongside. It is written to a temporary folder and
renamed into place, so a run killed at any moment never leaves a half-written checkpoint visible.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli.config import Config, dump_config

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainerState:
    """Everything besides the weights that exact resume needs (`trainer_state.pt`).

    step: optimizer steps done; optimizer / schedule: their state dicts; data_order: the prompt
    order's `{epoch, cursor}`; torch_rng: this process's RNG state, torch_rng_ranks: every rank's;
    before: the held-out evaluation before training (reported again at the end); initial_model:
    the folder the run started from (RFT samples from it); extra: state of optional stages, by name.
    """

    step: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    data_order: dict[str, int]
    torch_rng: Any
    torch_rng_ranks: list[Any] = field(default_factory=list)
    before: dict[str, Any] | None = None
    initial_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def rng_for(self, rank: int) -> Any:
        """This rank's RNG state; ranks a resumed run has more of than the saved one take rank 0's."""
        states = self.torch_rng_ranks or [self.torch_rng]
        return states[rank] if rank < len(states) else states[0]


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


TMP_DIR = re.compile(r"^\.tmp-step-\d+-(\d+)$")


def remove_stale_temp(run_dir: Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes that were killed (their process is gone),
    so they do not pile up; returns what was removed. A live writer's folder is left alone."""
    root = run_dir / "checkpoints"
    removed = []
    for path in root.iterdir() if root.is_dir() else []:
        m = TMP_DIR.match(path.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier attempt in this process: not being written now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint after `step` of a run lives (written or not)."""
    return run_dir / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    cfg: Config,
    state: TrainerState,
    ref_model: Any = None,
    reward_model: Any = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep_last`.

    On failure (disk full, permissions) the temporary folder is removed and the OSError raised;
    earlier checkpoints are untouched.
    """
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(run_dir, step)
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        if ref_model is not None:
            ref_model.save_pretrained(tmp / "ref", safe_serialization=True)
        if reward_model is not None:  # a learned RM in training (grpo_cli.training.iterative)
            reward_model.save_pretrained(tmp / "reward_model")
        _save_state(state, tmp / STATE_FILE)  # written last: its presence marks a complete checkpoint
        _fsync_tree(tmp)
        if final.exists():  # a resumed run re-saving a step it had already saved
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _save_state(state: TrainerState, path: Path) -> None:
    import torch

    torch.save(dataclasses.asdict(state), path)  # a plain dict on disk: readable without grpo


def load_state(checkpoint: Path) -> TrainerState:
    import torch

    saved = torch.load(checkpoint / STATE_FILE, weights_only=False)
    known = {f.name for f in dataclasses.fields(TrainerState)}
    return TrainerState(**{k: v for k, v in saved.items() if k in known})


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
