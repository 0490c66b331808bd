"""Where each metrics row goes besides metrics.jsonl (`train.run.report_to`): TensorBoard, W&B.

A tracker that cannot start (its package missing) is a one-line error before training starts. The
default, `auto`, is TensorBoard when `tensorboard` is installed and nothing (no warning) otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from grpo_cli.config import Config, config_to_dict
from grpo_cli.errors import UserError
from grpo_cli.report import Reporter


class Trackers:
    """`log(row, step)` sends the numeric fields of a metrics row to every tracker; `close()` ends them."""

    def __init__(self, cfg: Config, run_dir: Path, report: Reporter) -> None:
        self._tb: Any = None
        self._wandb: Any = None
        wanted = cfg.train.run.report_to
        if "tensorboard" in wanted or "auto" in wanted:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if "tensorboard" in wanted:
                    raise UserError(
                        "train.run.report_to: tensorboard is not installed (pip install 'grpo-cli[tensorboard]')"
                    ) from None
            else:
                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in wanted:
            try:
                import wandb
            except ImportError:
                raise UserError(
                    "train.run.report_to: wandb needs the wandb package (pip install 'grpo-cli[wandb]')"
                ) from None
            # WANDB_MODE=offline writes the run under run_dir/wandb for a later `wandb sync`.
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "grpo"),
                name=run_dir.name,
                dir=str(run_dir),
                config=config_to_dict(cfg),
            )

    def log(self, row: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def log_eval(self, result: dict[str, Any] | None, step: int) -> None:
        """The before/after held-out accuracy, as `eval/accuracy` at step 0 and the last step."""
        if result is not None:
            self.log({"eval/accuracy": result["accuracy"]}, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
