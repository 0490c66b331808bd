"""The plots are written as PNG files; importing the module stays free of matplotlib."""

import subprocess
import sys
from pathlib import Path

import pytest

from grpo_cli.pipeline.plot import plot_curves, plot_training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_curves_two_models(tmp_path):
    results = {
        "instruct": {"pass@k": {1: 0.3, 4: 0.6, 16: 0.8}, "maj@k": {1: 0.3, 4: 0.35, 16: 0.4}},
        # keys as strings, as after a JSON round trip
        "rl": {"pass@k": {"1": 0.4, "4": 0.62, "16": 0.8}, "maj@k": {"1": 0.4, "4": 0.5, "16": 0.55}},
    }
    path = tmp_path / "sub" / "curves.png"
    plot_curves(results, path, title="pass@K and maj@K")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_curves_needs_a_metric(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        plot_curves({"m": {"accuracy": 0.5}}, tmp_path / "x.png")


def test_plot_training(tmp_path):
    rows = [{"step": s, "loss": 1.0 / (s + 1), "reward": s / 10} for s in range(10)]
    rows.append({"step": 10, "loss": 0.05})  # no reward this step: skipped
    path = tmp_path / "train.png"
    plot_training(rows, path, ["loss", "reward", "kl", "entropy"])  # kl, entropy: "no data" panels
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_import_is_cheap():
    code = "import sys, grpo_cli.pipeline.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_plot_training_default_panels_with_held_out_points(tmp_path):
    # The run folder's figure: default panels (kl missing: beta 0), held-out before/after on accuracy.
    rows = [
        {"step": s, "reward_mean": s / 30, "accuracy": s / 40, "completion_len_mean": 20 + s, "zero_std_frac": 0.5}
        for s in range(1, 31)
    ]
    path = tmp_path / "training-curves.png"
    plot_training(
        rows,
        path,
        title="Training curves: tiny on rg:basic_arithmetic (grpo)",
        before={"accuracy": 0.38},
        after={"accuracy": 0.45},
    )
    assert path.read_bytes().startswith(PNG_MAGIC)
