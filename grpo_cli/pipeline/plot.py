"""PNG plots: pass@k / maj@k curves per model (DeepSeekMath Figure 7 shape) and training curves.

matplotlib is imported inside the functions, so importing this module stays cheap. Figures are drawn
on an Agg canvas directly (no pyplot), so no global backend is switched and no window ever opens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CURVE_METRICS = {"pass@k": "Pass@K", "maj@k": "Maj@K"}  # metric -> panel title


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def plot_curves(results: dict[str, dict[str, Any]], path: Path, title: str | None = None) -> None:
    """One panel per metric (accuracy % vs k, log2 x-axis), one line per model label.

    results maps a label to an `evaluate_groups` result; k keys may be ints or, after a JSON round
    trip, strings.
    """
    metrics = [m for m in CURVE_METRICS if any(m in r for r in results.values())]
    if not metrics:
        raise ValueError(f"no curves to plot: results hold none of {', '.join(CURVE_METRICS)}")
    fig, axes = _figure(1, len(metrics), 4.5, 3.6)
    for ax, metric in zip(axes, metrics):
        all_ks: set[int] = set()
        for label, result in results.items():
            if metric not in result:
                continue
            points = sorted((int(k), 100.0 * v) for k, v in result[metric].items())
            all_ks.update(k for k, _ in points)
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
        ax.set_xlabel("K: number of samples")
        ax.set_ylabel("Acc (%)")
        ax.set_title(CURVE_METRICS[metric])
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)


def plot_training(metrics_rows: list[dict[str, Any]], path: Path, keys: list[str]) -> None:
    """One small panel per key, value vs `step`; rows without the key (or a step) are skipped."""
    if not keys:
        raise ValueError("no metric keys to plot")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _figure(nrows, ncols, 3.6, 2.6)
    for ax, key in zip(axes, keys):
        points = [(r["step"], r[key]) for r in metrics_rows if r.get("step") is not None and r.get(key) is not None]
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], linewidth=1.2)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
